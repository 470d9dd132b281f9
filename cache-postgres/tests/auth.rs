//! Password authentication on a real server (`CACHE_TEST_POSTGRES_URL`, whose pg_hba.conf
//! makes the role `cache_password` log in with its password): a password full of
//! URL-special characters works through `User` / `Password` and inside a URL, and a wrong
//! password fails clearly — without the password in the error.

use cache_core::testkit::{TestEntry, TestIndex, unique_purpose};
use cache_core::{CacheSettings, ErrorKind};
use cache_postgres::{PostgresConfig, PostgresConnector};

/// The role `cargo xtask test`'s servers authenticate by password (SCRAM).
const ROLE: &str = "cache_password";
/// A password that breaks naive URL building: every character a URL gives meaning to.
const PASSWORD: &str = "p@ss:w/rd?#%20&=+ é'";

/// Makes [`ROLE`] a login role with [`PASSWORD`]; returns the admin URL.
async fn password_role() -> Option<String> {
    let url = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL")?;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // Several test processes may do this at once: one at a time (roles are cluster-wide).
    let quoted = PASSWORD.replace('\'', "''");
    admin
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7318001); \
             DO $$ BEGIN CREATE ROLE {ROLE} LOGIN SUPERUSER; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             ALTER ROLE {ROLE} PASSWORD '{quoted}'; COMMIT"
        ))
        .await
        .unwrap();
    Some(url)
}

/// Sets, reads and invalidates one object through a connector on `config`.
async fn round_trip(config: &PostgresConfig) {
    let connector = PostgresConnector::new(config, "v1").unwrap();
    connector.setup().await.unwrap();
    let cache = connector.cache::<TestIndex, TestEntry>(
        &unique_purpose("auth"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    cache_core::testkit::round_trip(&*cache).await;
}

#[tokio::test]
async fn a_password_with_awkward_characters_works_as_fields_and_in_a_url() {
    let Some(url) = password_role().await else {
        return;
    };
    round_trip(&PostgresConfig {
        user: ROLE.to_owned(),
        password: PASSWORD.to_owned(),
        ..PostgresConfig::with_url(&url)
    })
    .await;

    let parsed: tokio_postgres::Config = url.parse().unwrap();
    let encoded =
        percent_encoding::utf8_percent_encode(PASSWORD, percent_encoding::NON_ALPHANUMERIC);
    let with_password = format!(
        "postgres://{ROLE}:{encoded}@127.0.0.1:{}/postgres",
        parsed.get_ports()[0]
    );
    round_trip(&PostgresConfig::with_url(with_password)).await;
}

#[tokio::test]
async fn a_wrong_password_fails_clearly_and_is_never_shown() {
    let Some(url) = password_role().await else {
        return;
    };
    let wrong = "not-the-password-5a1e";
    let config = PostgresConfig {
        user: ROLE.to_owned(),
        password: wrong.to_owned(),
        ..PostgresConfig::with_url(&url)
    };
    let connector = PostgresConnector::new(&config, "v1").unwrap();
    let error = connector
        .setup()
        .await
        .expect_err("a wrong password cannot connect");
    eprintln!("refused as it should be: {error}");
    let shown = format!("{error} {error:?} {config:?}");
    assert!(!shown.contains(wrong), "the password leaked: {shown}");
    assert!(
        error.to_string().contains(&format!(
            "password authentication failed for user \"{ROLE}\""
        )),
        "the error itself says it is the password: {error}"
    );
    assert_ne!(error.kind(), ErrorKind::Timeout, "{error}");
}
