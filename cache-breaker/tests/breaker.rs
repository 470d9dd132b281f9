//! The breaker's rules on paused Tokio time: the reference's thresholds (strict limits), the
//! minimum volume, interval resets, the half-open quota and re-opening, cancelled calls.

use std::time::Duration;

use cache_breaker::{Breaker, BreakerState};
use cache_core::{BreakerSettings, FailureEvent};

fn settings(consecutive: u32, ratio: f64, min_requests: u32) -> BreakerSettings {
    BreakerSettings {
        max_consecutive_failures: consecutive,
        max_failure_ratio: ratio,
        min_requests,
        ..BreakerSettings::default()
    }
}

/// Lets `successes` calls succeed, then `failures` fail.
fn run(b: &Breaker, successes: u32, failures: u32) {
    for _ in 0..successes {
        b.permit().expect("closed").success();
    }
    for _ in 0..failures {
        b.permit().expect("closed").failure();
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_must_exceed_the_limit() {
    let b = Breaker::new("test", settings(5, 0.0, 0));
    run(&b, 0, 5);
    assert_eq!(b.state(), BreakerState::Closed, "5 of max 5 do not trip");
    run(&b, 0, 1);
    assert_eq!(b.state(), BreakerState::Open, "6 do");
    assert!(b.permit().is_none() && b.is_rejecting());

    let b = Breaker::new("test", settings(5, 0.0, 0));
    run(&b, 0, 5);
    run(&b, 1, 5);
    assert_eq!(b.state(), BreakerState::Closed, "a success resets the run");
}

#[tokio::test(start_paused = true)]
async fn the_failures_of_one_event_count_once() {
    // A lost connection fails the 8 commands in flight on it at once.
    let b = Breaker::new("test", settings(5, 0.5, 4));
    let lost = FailureEvent::new();
    let permits: Vec<_> = (0..8).map(|_| b.permit().expect("closed")).collect();
    for permit in permits {
        permit.failure_of(Some(lost));
    }
    assert_eq!(b.state(), BreakerState::Closed, "one event, one failure");
    assert_eq!(b.counts().failures, 1);
    assert_eq!(b.counts().consecutive_failures, 1);
    // Another report of it later still is the same event.
    b.permit().expect("closed").failure_of(Some(lost));
    assert_eq!(b.counts().failures, 1);

    // Distinct events (connections lost one after another) and failures of no known event
    // count each.
    for _ in 0..3 {
        b.permit()
            .expect("closed")
            .failure_of(Some(FailureEvent::new()));
    }
    assert_eq!(b.counts().consecutive_failures, 4);
    b.permit().expect("closed").failure_of(None);
    assert_eq!(b.counts().consecutive_failures, 5);
    assert_eq!(b.state(), BreakerState::Closed);
    b.permit().expect("closed").failure_of(None);
    assert_eq!(b.state(), BreakerState::Open, "6 failures > 5");
}

#[tokio::test(start_paused = true)]
async fn the_failure_ratio_must_exceed_the_limit() {
    let b = Breaker::new("test", settings(0, 0.1, 20));
    run(&b, 90, 10);
    assert_eq!(b.counts().requests, 100);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "10 of 100 at 0.1 do not trip"
    );

    let b = Breaker::new("test", settings(0, 0.1, 20));
    run(&b, 90, 10);
    run(&b, 0, 1);
    assert_eq!(b.state(), BreakerState::Open, "11 of 101 do");
}

#[tokio::test(start_paused = true)]
async fn one_failure_right_after_start_does_not_trip() {
    let b = Breaker::new("test", BreakerSettings::default());
    run(&b, 0, 1);
    assert_eq!(b.state(), BreakerState::Closed);
    // Below MinRequests (20) the ratio rule waits, however bad the ratio...
    let b = Breaker::new("test", settings(0, 0.1, 20));
    run(&b, 0, 19);
    assert_eq!(b.state(), BreakerState::Closed);
    // ...and applies from MinRequests on.
    run(&b, 0, 1);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn the_interval_clears_the_counts_while_closed() {
    let b = Breaker::new(
        "test",
        BreakerSettings {
            interval: Duration::from_secs(10),
            ..settings(5, 0.0, 0)
        },
    );
    run(&b, 0, 5);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(b.counts().consecutive_failures, 0, "reset after Interval");
    run(&b, 0, 5);
    assert_eq!(b.state(), BreakerState::Closed);
    run(&b, 0, 1);
    assert_eq!(b.state(), BreakerState::Open);

    // Interval 0: never cleared.
    let b = Breaker::new("test", settings(5, 0.0, 0));
    run(&b, 0, 5);
    tokio::time::advance(Duration::from_secs(3600)).await;
    run(&b, 0, 1);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_the_quota_through_and_closes_after_that_many_successes() {
    let b = Breaker::new(
        "test",
        BreakerSettings {
            timeout: Duration::from_secs(60),
            max_retry_requests: 2,
            ..settings(1, 0.0, 0)
        },
    );
    run(&b, 0, 2);
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(b.permit().is_none(), "still open before Timeout");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let first = b.permit().expect("trial 1");
    let second = b.permit().expect("trial 2");
    assert!(b.permit().is_none(), "the quota is 2");
    first.success();
    assert_eq!(b.state(), BreakerState::HalfOpen, "1 success of 2");
    second.success();
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "2 consecutive successes close it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_while_half_open_opens_again() {
    let b = Breaker::new(
        "test",
        BreakerSettings {
            max_retry_requests: 3,
            ..settings(1, 0.0, 0)
        },
    );
    run(&b, 0, 2);
    tokio::time::advance(b.settings().timeout).await;
    b.permit().expect("trial").success();
    b.permit().expect("trial").failure();
    assert_eq!(b.state(), BreakerState::Open, "any failure re-opens");
    assert!(b.permit().is_none());
    tokio::time::advance(b.settings().timeout).await;
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen,
        "and Timeout later it tries again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_counts_as_success_and_never_blocks_half_open() {
    let b = Breaker::new("test", settings(1, 0.0, 0));
    run(&b, 0, 2);
    tokio::time::advance(b.settings().timeout).await;
    let trial = b.permit().expect("the one trial");
    assert!(b.permit().is_none());
    drop(trial); // the caller's future was dropped
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_before_a_state_change_are_not_counted() {
    let b = Breaker::new("test", settings(1, 0.0, 0));
    let slow = b.permit().expect("closed");
    run(&b, 0, 2);
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(b.settings().timeout).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    slow.failure(); // started before the breaker opened: ignored
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn the_interval_resets_exactly_at_its_end_and_again_at_every_next_one() {
    let b = Breaker::new(
        "test",
        BreakerSettings {
            interval: Duration::from_secs(10),
            ..settings(5, 0.0, 0)
        },
    );
    run(&b, 1, 3);
    tokio::time::advance(Duration::from_millis(9_999)).await;
    let counts = b.counts();
    assert_eq!(
        (
            counts.requests,
            counts.failures,
            counts.consecutive_failures
        ),
        (4, 3, 3),
        "nothing is cleared before the interval ends"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.counts().requests, 0, "cleared when the interval ends");
    run(&b, 0, 4);
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert_eq!(
        b.counts().consecutive_failures,
        4,
        "the second interval runs in full"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.counts().requests, 0, "and is cleared at its end too");
    run(&b, 0, 5);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_that_closes_again_starts_a_new_interval() {
    let b = Breaker::new(
        "test",
        BreakerSettings {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            max_retry_requests: 1,
            ..settings(2, 0.0, 0)
        },
    );
    run(&b, 0, 3);
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    b.permit().expect("half-open trial").success();
    assert_eq!(b.state(), BreakerState::Closed);
    run(&b, 0, 2);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        b.counts().consecutive_failures,
        0,
        "the interval restarted when the breaker closed, and ended 10 s later"
    );
    run(&b, 0, 2);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "2 failures of max 2 after the reset"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_begun_before_an_interval_reset_is_not_counted_after_it() {
    let b = Breaker::new(
        "test",
        BreakerSettings {
            interval: Duration::from_secs(10),
            ..settings(1, 0.0, 0)
        },
    );
    let slow = b.permit().expect("closed");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(b.counts().requests, 0, "reset");
    slow.failure();
    assert_eq!(
        b.counts().failures,
        0,
        "its outcome belongs to the interval that ended"
    );
    run(&b, 0, 1);
    assert_eq!(b.state(), BreakerState::Closed, "1 failure of max 1");
}

#[tokio::test(start_paused = true)]
async fn the_breaker_names_its_connector_settings_and_state_changes() {
    let (guard, logs) = cache_core::testkit::logs::capture();
    let s = settings(1, 0.0, 0);
    let b = Breaker::new("redis", s);
    assert_eq!(b.connector(), "redis");
    assert_eq!(*b.settings(), s);
    run(&b, 0, 2);
    tokio::time::advance(s.timeout).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    drop(guard);
    let text = logs.text();
    assert!(
        text.contains("connector=\"redis\"")
            && text.contains("from=\"closed\" to=\"open\"")
            && text.contains("from=\"open\" to=\"half-open\""),
        "{text}"
    );
}
