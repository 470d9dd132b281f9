//! Authentication on a real server (`CACHE_TEST_REDIS_URL`): an ACL user of the test's own
//! with a password full of URL-special characters works through `Username` / `Password`, and
//! a wrong password fails every operation clearly — without the password in the error.

use std::sync::Arc;

use cache_core::testkit::{TestEntry, TestIndex, unique_purpose};
use cache_core::{Cache, CacheSettings, ErrorKind};
use cache_redis::{RedisConfig, RedisConnector};

/// A password that breaks naive URL building: every character a URL gives meaning to.
const PASSWORD: &str = "p@ss:w/rd?#%20&=+ é";

/// Creates the ACL user `name` with [`PASSWORD`], allowed everything; returns the admin URL.
async fn acl_user(name: &str) -> Option<String> {
    let url = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL")?;
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(name)
        .arg("reset")
        .arg("on")
        .arg(format!(">{PASSWORD}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    Some(url)
}

fn config(url: &str, username: &str, password: &str) -> RedisConfig {
    RedisConfig {
        username: username.to_owned(),
        password: password.to_owned(),
        ..RedisConfig::with_url(url)
    }
}

#[tokio::test]
async fn an_acl_user_with_an_awkward_password_works() {
    let user = unique_purpose("user");
    let Some(url) = acl_user(&user).await else {
        return;
    };
    let connector = RedisConnector::new(config(&url, &user, PASSWORD), "v1").unwrap();
    let cache = connector.cache::<TestIndex, TestEntry>(
        &unique_purpose("auth"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    cache_core::testkit::round_trip(&*cache).await;
}

#[tokio::test]
async fn a_wrong_password_fails_clearly_and_is_never_shown() {
    let user = unique_purpose("user");
    let Some(url) = acl_user(&user).await else {
        return;
    };
    let wrong = "not-the-password-5a1e";
    let connector = RedisConnector::new(config(&url, &user, wrong), "v1").unwrap();
    let cache = connector.cache::<TestIndex, TestEntry>(
        &unique_purpose("auth"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    let error = cache
        .set(Arc::new(TestEntry::new("1", &[])))
        .await
        .expect_err("a wrong password cannot set");
    eprintln!("refused as it should be: {error}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(wrong), "the password leaked: {shown}");
    assert!(
        shown.to_lowercase().contains("password") || shown.to_lowercase().contains("auth"),
        "the error says it is the credentials: {shown}"
    );
    // A server refusing the credentials is not the server being down for a while.
    assert_ne!(error.kind(), ErrorKind::Timeout, "{error}");
    let error = cache
        .get(TestIndex::Id, "1")
        .await
        .expect_err("a wrong password cannot get either");
    assert!(!format!("{error} {error:?}").contains(wrong));
    assert_ne!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(format!("{:?}", connector.config()).find(wrong).is_none());
}
