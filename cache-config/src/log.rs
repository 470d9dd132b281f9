//! Per-object-cache logging: each object cache's `Log` settings as a `tracing` layer the
//! application installs. The library never installs a subscriber by itself.
//!
//! Events of the caches carry a `purpose` field (the object cache's name) and a `connector`
//! field; [`log_layer`] gives every object cache its own output, filtered by that cache's
//! `Log.Level`, formatted as its `Log.Formatter.Format` says (text or JSON), with file and line
//! when `Log.AddSource` is set. Events of the cache crates that belong to no one object cache
//! (a connector's circuit breaker changing state, a TLS setting that skips verification, kept
//! invalidations over their budget) are written as text at warn and above. Events of other
//! code pass untouched to the application's other layers.

use std::fmt;

use cache_core::{LogFormat, LogLevel, LogSettings};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::model::CachesConfig;

/// A layer writing each object cache's events to standard error as its `Log` settings say.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let config = cache_config::Loader::new()
///     .yaml("Caches: { Instance: { Log: { Level: info, Formatter: { Format: json } } } }")
///     .load()?;
/// let subscriber = tracing_subscriber::registry().with(cache_config::log_layer(&config));
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(target: cache_core::LOG_TARGET, purpose = "instance", "shown, as JSON");
///     tracing::info!(target: cache_core::LOG_TARGET, purpose = "organization", "not shown");
/// });
/// # Ok::<(), cache_config::ConfigError>(())
/// ```
pub fn log_layer<S>(config: &CachesConfig) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    log_layer_with_writer(config, std::io::stderr)
}

/// [`log_layer`] writing to `writer` instead of standard error (a file, a buffer in tests).
pub fn log_layer_with_writer<S, W>(
    config: &CachesConfig,
    writer: W,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Clone + Send + Sync + 'static,
{
    let mut layers: Vec<Box<dyn Layer<S> + Send + Sync>> = config
        .object_caches()
        .map(|(purpose, settings)| purpose_layer(purpose, &settings.log, writer.clone()))
        .collect();
    layers.push(Box::new(
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .with_target(true)
            .with_filter(ConnectorFilter),
    ));
    Box::new(layers)
}

/// Lets through the events of the cache crates that name no object cache (no `purpose`
/// field: a connector's or the process's), at warn and above.
struct ConnectorFilter;

impl<S> Filter<S> for ConnectorFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !metadata.is_event()
            || (PurposeFilter::from_cache_crates(metadata) && *metadata.level() <= Level::WARN)
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        !event
            .metadata()
            .fields()
            .iter()
            .any(|f| f.name() == "purpose")
    }
}

fn purpose_layer<S, W>(
    purpose: &str,
    log: &LogSettings,
    writer: W,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = PurposeFilter {
        purpose: purpose.to_owned(),
        level: level(log.level),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(true)
        .with_file(log.add_source)
        .with_line_number(log.add_source);
    match log.formatter.format {
        LogFormat::Text => Box::new(fmt.with_filter(filter)),
        LogFormat::Json => Box::new(fmt.json().with_filter(filter)),
    }
}

fn level(level: LogLevel) -> Level {
    match level {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warn => Level::WARN,
        LogLevel::Error => Level::ERROR,
    }
}

/// Lets through the events of one object cache (its `purpose` field) at or above its level,
/// from the cache crates only.
struct PurposeFilter {
    purpose: String,
    level: Level,
}

impl PurposeFilter {
    fn from_cache_crates(metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        target == cache_core::LOG_TARGET || target.starts_with("cache_")
    }
}

impl<S> Filter<S> for PurposeFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        // Spans pass (they carry no purpose); events are checked below.
        !metadata.is_event()
            || (Self::from_cache_crates(metadata) && *metadata.level() <= self.level)
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let mut purpose = PurposeField {
            wanted: &self.purpose,
            matches: false,
        };
        event.record(&mut purpose);
        purpose.matches
    }
}

/// Finds whether an event's `purpose` field is the wanted one.
struct PurposeField<'a> {
    wanted: &'a str,
    matches: bool,
}

impl Visit for PurposeField<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "purpose" {
            self.matches = value.eq_ignore_ascii_case(self.wanted);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "purpose" {
            // `purpose = %name` arrives as Display through Debug: compare without quotes.
            let shown = format!("{value:?}");
            self.matches = shown.trim_matches('"').eq_ignore_ascii_case(self.wanted);
        }
    }
}
