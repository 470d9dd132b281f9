//! What near caches and their hub report to the `metrics` facade, read through a recording
//! recorder. A test binary of its own: the channel's gauge is per transport and process, and
//! the other tests lose and restore their channels at will.

use std::sync::Arc;
use std::time::Duration;

use cache_core::observe::{CHANNEL_HEALTHY, CHANNEL_OUTAGES, NEAR_GETS, NEAR_RECEIVED, NEAR_SENT};
use cache_core::testkit::metrics::{counter, gauge, install};
use cache_core::testkit::{LocalChannel, TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings};
use cache_memory::{MemoryConfig, MemoryConnector};
use cache_near::{Hub, NearCache};

use TestIndex::Id;

async fn wait_healthy(hub: &Hub) {
    // At least 5 s: a deadline against a hang, not a time bound.
    for _ in 0..2_500 {
        if hub.is_healthy() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the hub did not become healthy");
}

#[tokio::test]
async fn near_caches_report_where_gets_were_answered_and_what_travelled() {
    install();
    let connector = MemoryConnector::new(MemoryConfig::enabled());
    let settings = CacheSettings::default();
    let shared: Arc<dyn Cache<TestIndex, TestEntry>> =
        connector.cache("near-metrics", TestIndex::BUILT, &settings);
    let channel = LocalChannel::new();
    let near = |hub: Hub| {
        let memory = MemoryConnector::new(MemoryConfig::enabled()).cache(
            "near-metrics",
            TestIndex::BUILT,
            &settings,
        );
        NearCache::new("near-metrics", memory, Some(Arc::clone(&shared)), hub)
    };
    let (hub_a, hub_b) = (
        Hub::new(Arc::new(channel.clone())),
        Hub::new(Arc::new(channel.clone())),
    );
    wait_healthy(&hub_a).await;
    wait_healthy(&hub_b).await;
    assert_eq!(gauge(CHANNEL_HEALTHY, &[("transport", "local")]), Some(1.0));
    let (a, b) = (near(hub_a), near(hub_b.clone()));

    a.set(Arc::new(TestEntry::new("1", &[]))).await.unwrap();
    assert!(
        b.get(Id, "1").await.unwrap().is_some(),
        "from the shared level"
    );
    assert!(b.get(Id, "1").await.unwrap().is_some(), "from memory");
    assert!(b.get(Id, "2").await.unwrap().is_none());
    a.invalidate(Id, &["1"]).await.unwrap();

    let level = |level| {
        counter(
            NEAR_GETS,
            &[
                ("purpose", "near-metrics"),
                ("connector", "memory"),
                ("level", level),
            ],
        )
    };
    assert_eq!((level("memory"), level("shared"), level("miss")), (1, 1, 1));
    let purpose = [("purpose", "near-metrics")];
    assert_eq!(counter(NEAR_SENT, &purpose), 2, "A's set and invalidation");
    assert_eq!(
        counter(NEAR_RECEIVED, &purpose),
        2,
        "B applied both (A skips its own)"
    );

    channel.lose_all();
    assert_eq!(gauge(CHANNEL_HEALTHY, &[("transport", "local")]), Some(0.0));
    assert_eq!(
        counter(CHANNEL_OUTAGES, &[("transport", "local")]),
        2,
        "both hubs"
    );
    channel.reconnect_all();
    wait_healthy(&hub_b).await;
    assert_eq!(gauge(CHANNEL_HEALTHY, &[("transport", "local")]), Some(1.0));
}
