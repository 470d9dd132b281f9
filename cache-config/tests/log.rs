//! Each object cache's `Log` settings, honoured by the layer the application installs.

use std::io::Write;
use std::sync::{Arc, Mutex};

use cache_config::{Loader, log_layer_with_writer};
use cache_core::LOG_TARGET;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Collects everything written, for assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Captured {
    type Writer = Captured;
    fn make_writer(&'w self) -> Captured {
        self.clone()
    }
}

#[test]
fn each_cache_logs_at_its_own_level_and_format() {
    let config = Loader::new()
        .yaml(
            "Caches:
  Instance: { Log: { Level: info, AddSource: true } }
  Organization: { Log: { Level: warn, Formatter: { Format: json } } }",
        )
        .load()
        .unwrap();
    let out = Captured::default();
    let subscriber =
        tracing_subscriber::registry().with(log_layer_with_writer(&config, out.clone()));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: LOG_TARGET, purpose = "instance", connector = "memory", "instance-info");
        tracing::debug!(target: LOG_TARGET, purpose = "instance", "instance-debug");
        tracing::info!(target: LOG_TARGET, purpose = "organization", "organization-info");
        tracing::warn!(target: LOG_TARGET, purpose = "organization", "organization-warn");
        tracing::info!(target: LOG_TARGET, purpose = %String::from("milestones"), "milestones-info");
        tracing::error!(target: LOG_TARGET, purpose = %String::from("milestones"), "milestones-error");
        tracing::error!(target: "somebody_else", purpose = "instance", "foreign-error");
    });
    let text = out.text();
    assert!(text.contains("instance-info"), "instance at info: {text}");
    assert!(
        !text.contains("instance-debug"),
        "instance below info: {text}"
    );
    assert!(
        !text.contains("organization-info"),
        "organization below warn: {text}"
    );
    assert!(
        !text.contains("milestones-info"),
        "default level is error: {text}"
    );
    assert!(
        text.contains("milestones-error"),
        "errors by default: {text}"
    );
    assert!(
        !text.contains("foreign-error"),
        "other targets are not the caches': {text}"
    );
    let org_line = text
        .lines()
        .find(|l| l.contains("organization-warn"))
        .expect("organization at warn");
    assert!(
        org_line.starts_with('{') && org_line.contains("\"purpose\":\"organization\""),
        "json: {org_line}"
    );
    let instance_line = text.lines().find(|l| l.contains("instance-info")).unwrap();
    assert!(
        instance_line.contains("log.rs"),
        "AddSource shows the file: {instance_line}"
    );
    assert_eq!(
        text.lines().count(),
        3,
        "exactly one line per shown event: {text}"
    );
}

#[test]
fn warnings_of_no_one_cache_are_written_too() {
    let config = Loader::new().load().unwrap();
    let out = Captured::default();
    let subscriber =
        tracing_subscriber::registry().with(log_layer_with_writer(&config, out.clone()));
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(target: "cache_breaker::breaker", connector = "redis", "breaker-opened");
        tracing::info!(target: "cache_breaker::breaker", connector = "redis", "breaker-info");
        tracing::warn!(target: "somebody_else", "foreign-warn");
    });
    let text = out.text();
    assert!(text.contains("breaker-opened"), "{text}");
    assert!(!text.contains("breaker-info"), "below warn: {text}");
    assert!(!text.contains("foreign-warn"), "not the caches': {text}");
}
