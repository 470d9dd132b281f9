//! The spans an object cache opens, seen by a `tracing` layer that records them as an
//! OpenTelemetry layer would. A test binary of its own: `tracing` caches per call site whether
//! anyone listens, and tests of one process installing and not installing subscribers at once
//! race on that cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, ObjectCache, Result, async_trait};
use cache_memory::{MemoryConfig, MemoryConnector};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};

use TestIndex::{Id as ById, Name};

fn object_cache(purpose: &str) -> ObjectCache<TestIndex, TestEntry> {
    let connector = MemoryConnector::new(MemoryConfig::enabled());
    let cache = connector.cache::<TestIndex, TestEntry>(
        purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    ObjectCache::new(purpose, cache as Arc<dyn Cache<_, _>>)
}

/// The memory connector as a remote one looks: no answer without awaiting.
struct Remote(Arc<dyn Cache<TestIndex, TestEntry>>);

#[async_trait]
impl Cache<TestIndex, TestEntry> for Remote {
    fn connector(&self) -> &'static str {
        "remote"
    }
    fn indices(&self) -> &[TestIndex] {
        self.0.indices()
    }
    async fn get(&self, index: TestIndex, key: &str) -> Result<Option<Arc<TestEntry>>> {
        self.0.get(index, key).await
    }
    async fn set(&self, value: Arc<TestEntry>) -> Result<()> {
        self.0.set(value).await
    }
    async fn invalidate(&self, index: TestIndex, keys: &[&str]) -> Result<()> {
        self.0.invalidate(index, keys).await
    }
    async fn delete(&self, index: TestIndex, keys: &[&str]) -> Result<()> {
        self.0.delete(index, keys).await
    }
    async fn truncate(&self) -> Result<()> {
        self.0.truncate().await
    }
}

/// A recorded span: its name and fields as text.
#[derive(Clone, Debug, Default)]
struct SpanRecord {
    fields: HashMap<String, String>,
}

/// Records every span's fields, as an OpenTelemetry layer would see them.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<HashMap<u64, SpanRecord>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut record = SpanRecord::default();
        record
            .fields
            .insert("name".to_owned(), attrs.metadata().name().to_owned());
        attrs.record(&mut Fields(&mut record.fields));
        self.0.lock().unwrap().insert(id.into_u64(), record);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(record) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut record.fields));
        }
    }
}

#[test]
fn operations_not_answered_at_once_run_in_spans_with_their_outcome() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cache = object_cache("spans");
        cache.set(TestEntry::new("1", &["one"])).await;
        assert!(cache.get(ById, "1").await.is_some());
        cache.invalidate(Name, &["one"]).await.unwrap();
        cache
            .get_or_load(ById, "1", || async { Ok::<_, String>(None) })
            .await
            .unwrap();
        let remote = ObjectCache::new("remote-spans", Arc::new(Remote(cache.backend())) as Arc<_>);
        remote.set(TestEntry::new("7", &[])).await;
        assert!(remote.get(ById, "7").await.is_some());
        assert!(remote.get(ById, "8").await.is_none());
    });
    let recorded: Vec<HashMap<String, String>> = spans
        .0
        .lock()
        .unwrap()
        .values()
        .map(|r| r.fields.clone())
        .collect();
    let find = |otel: &str| {
        recorded
            .iter()
            .find(|f| {
                f.get("otel.name").map(String::as_str) == Some(otel) && f["purpose"] == "spans"
            })
            .unwrap_or_else(|| panic!("a {otel} span among {recorded:?}"))
    };
    let set = find("cache.set");
    assert_eq!(set["name"], "cache");
    assert_eq!(set["purpose"], "spans");
    assert_eq!(set["connector"], "memory");
    assert_eq!(set["operation"], "set");
    assert_eq!(set["outcome"], "ok");
    let invalidate = find("cache.invalidate");
    assert_eq!(invalidate["index"], "name");
    assert_eq!(invalidate["outcome"], "ok");
    let load = find("cache.load");
    assert_eq!(load["index"], "id");
    assert_eq!(load["outcome"], "absent");
    let gets: Vec<_> = recorded
        .iter()
        .filter(|f| f.get("otel.name").map(String::as_str) == Some("cache.get"))
        .collect();
    assert_eq!(
        gets.len(),
        2,
        "memory hits are answered at once, without a span; remote gets have one: {recorded:?}"
    );
    assert!(
        gets.iter()
            .all(|g| g["connector"] == "remote" && g["index"] == "id")
    );
    let mut outcomes: Vec<&str> = gets.iter().map(|g| g["outcome"].as_str()).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["hit", "miss"]);
}
