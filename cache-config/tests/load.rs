//! Loading: the embedded defaults, the reference's example files, layering, and errors.

// figment::Jail closures return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use cache_config::{ConfigError, DEFAULTS_YAML, Loader};

fn load(yaml: &str) -> Result<cache_config::CachesConfig, ConfigError> {
    Loader::new().yaml(yaml).load()
}

#[test]
fn the_embedded_defaults_are_the_documented_ones() {
    let config = Loader::new().load().expect("defaults load");
    assert!(DEFAULTS_YAML.contains("LastUsage: 10m"));
    for (purpose, settings) in config.object_caches() {
        assert_eq!(
            settings.connector_name(),
            "",
            "{purpose}: no caching by default"
        );
        assert_eq!(settings.max_age, Duration::from_secs(3600), "{purpose}");
        assert_eq!(settings.last_usage, Duration::from_secs(600), "{purpose}");
    }
    assert!(!config.connectors.memory.enabled);
    assert_eq!(config.connectors.memory.capacity, 10_000);
    assert_eq!(
        config.connectors.memory.auto_prune.interval,
        Duration::from_secs(60)
    );
    assert_eq!(
        config.connectors.memory.auto_prune.timeout,
        Duration::from_secs(5)
    );
}

#[test]
fn reference_example_single_server_with_memory_loads_as_written() {
    let config = load(
        "Caches:\n  Memory:\n    Enabled: true\n  Instance:\n    Connector: \"memory\"\n    MaxAge: 1h\n  Organization:\n    Connector: \"memory\"\n    MaxAge: 1h\n",
    )
    .unwrap();
    assert!(config.connectors.memory.enabled);
    assert_eq!(config.instance.connector_name(), "memory");
    assert_eq!(config.organization.connector_name(), "memory");
    assert_eq!(config.milestones.connector_name(), "");
    assert_eq!(config.instance.max_age, Duration::from_secs(3600));
}

const EXAMPLE_POSTGRES: &str = "Caches:\n  Memory:\n    Enabled: true\n  Postgres:\n    Enabled: true\n  Instance:\n    Connector: \"memory\"\n    MaxAge: 1s\n  Milestones:\n    Connector: \"postgres\"\n    MaxAge: 1h\n    LastUsage: 10m\n  Organization:\n    Connector: \"memory\"\n    MaxAge: 1s\n";

const EXAMPLE_REDIS: &str = "Caches:\n  Connectors:\n    Redis:\n      Enabled: true\n  Instance:\n    Connector: \"redis\"\n    MaxAge: 1h\n    LastUsage: 10m\n  Milestones:\n    Connector: \"redis\"\n    MaxAge: 1h\n    LastUsage: 10m\n  Organization:\n    Connector: \"redis\"\n    MaxAge: 1h\n    LastUsage: 10m\n";

#[cfg(not(feature = "postgres"))]
#[test]
fn reference_example_with_postgres_names_the_missing_feature() {
    let postgres = load(EXAMPLE_POSTGRES).unwrap_err();
    assert_eq!(postgres.path(), "Caches.Connectors.Postgres.Enabled");
    assert!(
        postgres.message().contains("`postgres` Cargo feature"),
        "{postgres}"
    );
}

#[cfg(feature = "redis")]
#[test]
fn redis_topologies_load_from_yaml_and_environment() {
    let cluster = load(
        "Caches:\n  Redis:\n    Enabled: true\n    Cluster:\n      Addrs: [\"r1:7000\", \"r2:7000\", \"r3:7000\"]\n",
    )
    .unwrap();
    let addrs = &cluster.connectors.redis.cluster.as_ref().unwrap().addrs;
    assert_eq!(addrs, &["r1:7000", "r2:7000", "r3:7000"]);
    figment::Jail::expect_with(|jail| {
        jail.set_env("APP_CACHES_CONNECTORS_REDIS_SENTINEL_MASTERNAME", "cache");
        jail.set_env(
            "APP_CACHES_CONNECTORS_REDIS_SENTINEL_ADDRS",
            "[s1:26379, s2:26379]",
        );
        let config = Loader::new().env_prefix("APP").load().unwrap();
        let sentinel = config.connectors.redis.sentinel.unwrap();
        assert_eq!(sentinel.master_name, "cache");
        assert_eq!(sentinel.addrs, ["s1:26379", "s2:26379"]);
        Ok(())
    });
}

#[cfg(feature = "postgres")]
#[test]
fn reference_example_with_postgres_loads_as_written() {
    let config = load(EXAMPLE_POSTGRES).unwrap();
    assert!(config.connectors.postgres.enabled);
    assert_eq!(config.milestones.connector_name(), "postgres");
    assert_eq!(
        config.connectors.postgres.auto_prune.interval,
        Duration::from_secs(15 * 60)
    );
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_settings_load_and_passwords_stay_hidden() {
    let config = load(
        "Caches:\n  Postgres:\n    Enabled: true\n    URL: postgres://app:s3cret@db:5432/app\n    Port: 6432\n    SSLMode: disable\n    Schema: app_cache\n    PoolSize: 4\n    MaxConcurrentReads: 3\n    StatementTimeout: 500ms\n",
    )
    .unwrap();
    let postgres = &config.connectors.postgres;
    assert_eq!(postgres.port, 6432);
    assert_eq!(postgres.schema, "app_cache");
    assert_eq!(postgres.pool_size, 4);
    assert_eq!(postgres.concurrent_reads(), 3);
    assert_eq!(postgres.statement_timeout, Duration::from_millis(500));
    let pg = postgres.connection_config().unwrap();
    assert_eq!(pg.get_ports(), [6432]);
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "no password in Debug"
    );
}

#[cfg(not(feature = "redis"))]
#[test]
fn reference_example_with_redis_names_the_missing_feature() {
    let redis = load(EXAMPLE_REDIS).unwrap_err();
    assert_eq!(redis.path(), "Caches.Connectors.Redis.Enabled");
    assert!(redis.message().contains("`redis` Cargo feature"), "{redis}");
}

#[cfg(feature = "redis")]
#[test]
fn reference_example_with_redis_loads_as_written() {
    let config = load(EXAMPLE_REDIS).unwrap();
    assert!(config.connectors.redis.enabled);
    for (purpose, settings) in config.object_caches() {
        assert_eq!(settings.connector_name(), "redis", "{purpose}");
        assert_eq!(settings.last_usage, Duration::from_secs(600), "{purpose}");
    }
}

#[test]
fn keys_are_case_insensitive_and_last_use_age_is_an_alias() {
    let config = load(
        "caches: { MEMORY: { enabled: true }, instance: { CONNECTOR: Memory, maxage: 500ms, LastUseAge: 1h30m } }",
    )
    .unwrap();
    assert_eq!(config.instance.connector_name(), "memory");
    assert_eq!(config.instance.max_age, Duration::from_millis(500));
    assert_eq!(config.instance.last_usage, Duration::from_secs(5400));
}

#[test]
fn later_layers_win_and_environment_wins_over_files() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "caches.yaml",
            "Caches:\n  Memory: { Enabled: true }\n  Instance: { Connector: memory, MaxAge: 1h }\n",
        )?;
        jail.set_env("TESTAPP_CACHES_INSTANCE_MAXAGE", "1s");
        jail.set_env("TESTAPP_CACHES_CONNECTORS_MEMORY_CAPACITY", "42");
        let config = Loader::new()
            .file("caches.yaml")
            .env_prefix("TESTAPP")
            .load()
            .map_err(|e| e.to_string())?;
        assert_eq!(config.instance.max_age, Duration::from_secs(1));
        assert_eq!(config.instance.connector_name(), "memory");
        assert_eq!(config.connectors.memory.capacity, 42);
        let without_env = Loader::new()
            .file("caches.yaml")
            .load()
            .map_err(|e| e.to_string())?;
        assert_eq!(without_env.instance.max_age, Duration::from_secs(3600));
        Ok(())
    });
}

#[test]
fn declared_purposes_have_their_own_settings() {
    let config = Loader::new()
        .yaml("Caches: { Memory: { Enabled: true }, Sessions: { Connector: memory, MaxAge: 5m } }")
        .purpose("Sessions")
        .load()
        .unwrap();
    let sessions = config.settings("sessions").expect("declared");
    assert_eq!(sessions.connector_name(), "memory");
    assert_eq!(sessions.max_age, Duration::from_secs(300));
    let undeclared = Loader::new().purpose("tokens").load().unwrap();
    assert_eq!(undeclared.settings("tokens").unwrap().connector_name(), "");
}

/// Each bad configuration and the exact key path its error must name.
const BAD: &[(&str, &str, &str)] = &[
    (
        "Caches: { Instance: { MaxAg: 1h } }",
        "Caches.Instance.maxag",
        "did you mean `MaxAge`",
    ),
    (
        "Caches: { Instanse: { MaxAge: 1h } }",
        "Caches.instanse",
        "did you mean `Instance`",
    ),
    (
        "Caches: { Organization: { LastUsag: 1m } }",
        "Caches.Organization.lastusag",
        "did you mean `LastUsage`",
    ),
    (
        "Caches: { Instance: { MaxAge: -1s } }",
        "Caches.Instance.MaxAge",
        "negative",
    ),
    (
        "Caches: { Instance: { MaxAge: 10 } }",
        "Caches.Instance.MaxAge",
        "unit",
    ),
    (
        "Caches: { Instance: { MaxAge: soon } }",
        "Caches.Instance.MaxAge",
        "soon",
    ),
    (
        "Caches: { Milestones: { LastUsage: 1 fortnight } }",
        "Caches.Milestones.LastUsage",
        "fortnight",
    ),
    (
        "Caches: { Instance: { Connector: memory } }",
        "Caches.Instance.Connector",
        "Caches.Connectors.Memory.Enabled: true",
    ),
    (
        "Caches: { Instance: { Connector: memroy } }",
        "Caches.Instance.Connector",
        "did you mean `memory`",
    ),
    (
        "Caches: { Organization: { Connector: redis } }",
        "Caches.Organization.Connector",
        "not enabled",
    ),
    (
        "Caches: { Milestones: { Connector: postgres } }",
        "Caches.Milestones.Connector",
        "not enabled",
    ),
    (
        "Caches: { Connectors: { Memcached: {} } }",
        "Caches.Connectors.memcached",
        "allowed here: Memory, Postgres, Redis",
    ),
    (
        "Caches: { Connectors: { Memory: { Capacity: 0 } } }",
        "Caches.Connectors.Memory.Capacity",
        "cache nothing",
    ),
    (
        "Caches: { Connectors: { Memory: { Capacity: lots } } }",
        "Caches.Connectors.Memory.Capacity",
        "lots",
    ),
    (
        "Caches: { Connectors: { Memory: { Enabled: maybe } } }",
        "Caches.Connectors.Memory.Enabled",
        "maybe",
    ),
    (
        "Caches: { Connectors: { Memory: { AutoPrune: { Intervall: 1m } } } }",
        "Caches.Connectors.Memory.AutoPrune.intervall",
        "did you mean `Interval`",
    ),
    (
        "Caches: { Connectors: { Memory: { AutoPrune: { Interval: -5s } } } }",
        "Caches.Connectors.Memory.AutoPrune.Interval",
        "negative",
    ),
    (
        "Caches: { Connectors: { Memory: { Capasity: 5 } } }",
        "Caches.Connectors.Memory.capasity",
        "did you mean `Capacity`",
    ),
    (
        "Caches: { Instance: { Log: { Level: verbose } } }",
        "Caches.Instance.Log.Level",
        "verbose",
    ),
    (
        "Caches: { Instance: { Log: { Formatter: { Format: xml } } } }",
        "Caches.Instance.Log.Formatter.Format",
        "xml",
    ),
    (
        "Caches: { Instance: { Log: { Colour: red } } }",
        "Caches.Instance.Log.colour",
        "allowed here",
    ),
    (
        "Caches: { Memory: { Enabled: true }, Connectors: { Memory: { Enabled: true } } }",
        "Caches.Memory",
        "both",
    ),
    ("Caches: { Instance: 5 }", "Caches.Instance", "expected"),
    ("Caches: [1, 2]", "Caches", "map"),
    (
        "Caches: { Connectors: { Redis: { Enabled: yes please } } }",
        "Caches.Connectors.Redis.Enabled",
        "yes please",
    ),
];

/// Every Redis key of the reference's documentation, as it writes them.
#[cfg(feature = "redis")]
#[test]
fn the_reference_redis_keys_load_and_passwords_stay_hidden() {
    let config = load(
        "Caches:
  Connectors:
    Redis:
      Enabled: true
      Addr: cache.internal:6380
      Network: tcp
      Username: svc
      Password: s3cret
      DB: 2
      DBOffset: 0
      ClientName: zitadel
      EnableTLS: false
      MaxRetries: 3
      MinRetryBackoff: 8ms
      MaxRetryBackoff: 512ms
      DialTimeout: 5s
      ReadTimeout: 3s
      WriteTimeout: 3s
      PoolFIFO: false
      PoolSize: 20
      PoolTimeout: 4s
      MinIdleConns: 2
      MaxIdleConns: 0
      MaxActiveConns: 0
      ConnMaxIdleTime: 30m
      ConnMaxLifetime: 0
      DisableIndentity: false
      IdentitySuffix: ''
",
    )
    .unwrap();
    let redis = &config.connectors.redis;
    assert_eq!(redis.addr, "cache.internal:6380");
    assert_eq!(
        (redis.pool_size, redis.db, redis.min_idle_conns),
        (20, 2, 2)
    );
    assert_eq!(redis.pool_timeout, Duration::from_secs(4));
    assert_eq!(
        redis.ignored_keys(),
        [
            "ClientName",
            "MaxRetries",
            "MinRetryBackoff",
            "MaxRetryBackoff"
        ]
    );
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "no password in Debug"
    );
    let config = load(
        "Caches: { Redis: { Enabled: true, Addr: cache.internal:6380, Password: s3cret, DB: 2, PoolSize: 20, MaxRetries: 3, MinIdleConns: 2, WriteTimeout: 1s } }",
    )
    .unwrap();
    let redis = &config.connectors.redis;
    assert_eq!(
        (redis.pool_size, redis.db, redis.min_idle_conns),
        (20, 2, 2)
    );
    assert_eq!(redis.ignored_keys(), ["MaxRetries"]);
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "no password in Debug"
    );
}

/// Bad only while the PostgreSQL backend is not compiled in.
#[cfg(not(feature = "postgres"))]
const BAD_POSTGRES: &[(&str, &str, &str)] = &[(
    "Caches: { Connectors: { Postgres: { Enabled: true } } }",
    "Caches.Connectors.Postgres.Enabled",
    "`postgres` Cargo feature",
)];

/// Bad PostgreSQL settings, checked when the backend is compiled in.
#[cfg(feature = "postgres")]
const BAD_POSTGRES: &[(&str, &str, &str)] = &[
    (
        "Caches: { Postgres: { MaxObjectSize: 12 parsecs } }",
        "Caches.Connectors.Postgres.MaxObjectSize",
        "not a size",
    ),
    (
        "Caches: { Postgres: { Enabled: true, URL: \"postgres://app:s3cret@db:port/app\" } }",
        "Caches.Connectors.Postgres.URL",
        "not a PostgreSQL connection URL",
    ),
    (
        "Caches: { Postgres: { Schema: \"cache; DROP TABLE users\" } }",
        "Caches.Connectors.Postgres.Schema",
        "plain schema name",
    ),
    (
        "Caches: { Postgres: { SSLMode: verify_full } }",
        "Caches.Connectors.Postgres.SSLMode",
        "verify-full",
    ),
    (
        "Caches: { Postgres: { SSLMode: verify-full, TLS: { InsecureSkipVerify: true } } }",
        "Caches.Connectors.Postgres.TLS.InsecureSkipVerify",
        "choose one",
    ),
    (
        "Caches: { Postgres: { StatementTimeout: 0 } }",
        "Caches.Connectors.Postgres.StatementTimeout",
        "hang forever",
    ),
    (
        "Caches: { Postgres: { CircuitBreaker: { MaxRetryRequests: 0 } } }",
        "Caches.Connectors.Postgres.CircuitBreaker.MaxRetryRequests",
        "1 or more",
    ),
    (
        "Caches: { Postgres: { Databse: app } }",
        "Caches.Connectors.Postgres.databse",
        "did you mean `Database`",
    ),
];

/// Bad only while the Redis backend is not compiled in.
#[cfg(not(feature = "redis"))]
const BAD_REDIS: &[(&str, &str, &str)] = &[(
    "Caches: { Connectors: { Redis: { Enabled: true } } }",
    "Caches.Connectors.Redis.Enabled",
    "`redis` Cargo feature",
)];

/// Bad Redis settings, checked when the backend is compiled in.
#[cfg(feature = "redis")]
const BAD_REDIS: &[(&str, &str, &str)] = &[
    (
        "Caches: { Redis: { MaxObjectSize: -5 } }",
        "Caches.Connectors.Redis.MaxObjectSize",
        "not a size",
    ),
    (
        "Caches: { Instance: { RefreshAhead: 1.5 } }",
        "Caches.Instance.RefreshAhead",
        "outside 0..1",
    ),
    (
        "Caches: { Instance: { MaxAge: 0, RefreshAhead: 0.8 } }",
        "Caches.Instance.RefreshAhead",
        "set a MaxAge",
    ),
    (
        "Caches: { Instance: { MaxStale: -1s } }",
        "Caches.Instance.MaxStale",
        "negative",
    ),
    (
        "Caches: { Memory: { Enabled: true }, Instance: { Connector: memory, Near: { Enabled: true } } }",
        "Caches.Instance.Near.Enabled",
        "Channel: redis",
    ),
    (
        "Caches: { Redis: { Enabled: true }, Instance: { Connector: redis, Near: { Enabled: true, Capacity: 0 } } }",
        "Caches.Instance.Near.Capacity",
        "nothing in memory",
    ),
    (
        "Caches: { Redis: { Enabled: true }, Instance: { Connector: redis, Near: { Enable: true } } }",
        "Caches.Instance.Near.enable",
        "did you mean `Enabled`",
    ),
    (
        "Caches: { Memory: { Enabled: true }, Instance: { Connector: memory, Channel: redsi } }",
        "Caches.Instance.Channel",
        "did you mean `redis`",
    ),
    (
        "Caches: { Memory: { Enabled: true }, Instance: { Connector: memory, Channel: redis } }",
        "Caches.Instance.Channel",
        "not enabled",
    ),
    (
        "Caches: { Redis: { Enabled: true }, Instance: { Connector: redis, Channel: redis } }",
        "Caches.Instance.Channel",
        "Near.Enabled: true",
    ),
    (
        "Caches: { Redis: { Enabled: true }, Instance: { Channel: redis } }",
        "Caches.Instance.Channel",
        "caches nothing",
    ),
    (
        "Caches: { Redis: { Enabled: true, URL: \"http://app:s3cret@cache\" } }",
        "Caches.Connectors.Redis.URL",
        "not a Redis URL",
    ),
    (
        "Caches: { Redis: { PoolSize: 0 } }",
        "Caches.Connectors.Redis.PoolSize",
        "1 or more",
    ),
    (
        "Caches: { Redis: { Url: redis://h:1, DialTimeout: 5 } }",
        "Caches.Connectors.Redis.DialTimeout",
        "unit",
    ),
    (
        "Caches: { Redis: { CircuitBreaker: { MaxFailureRatio: 1.5 } } }",
        "Caches.Connectors.Redis.CircuitBreaker.MaxFailureRatio",
        "outside 0..1",
    ),
    (
        "Caches: { Redis: { CircuitBreaker: { MaxConsecutiveFailure: 3 } } }",
        "Caches.Connectors.Redis.CircuitBreaker.maxconsecutivefailure",
        "did you mean `MaxConsecutiveFailures`",
    ),
    (
        "Caches: { Redis: { Cluster: { Addrs: [] } } }",
        "Caches.Connectors.Redis.Cluster.Addrs",
        "at least one host:port",
    ),
    (
        "Caches: { Redis: { Sentinel: { MasterNme: x } } }",
        "Caches.Connectors.Redis.Sentinel.masternme",
        "did you mean `MasterName`",
    ),
    (
        "Caches: { Redis: { PoolSise: 5 } }",
        "Caches.Connectors.Redis.poolsise",
        "did you mean `PoolSize`",
    ),
];

#[test]
fn every_bad_configuration_names_its_key_path() {
    assert!(BAD.len() >= 20);
    let mut failures = Vec::new();
    for (yaml, path, hint) in BAD.iter().chain(BAD_POSTGRES).chain(BAD_REDIS) {
        match load(yaml) {
            Ok(_) => failures.push(format!("{yaml}\n    loaded, expected an error at {path}")),
            Err(e) if e.path() != *path || !e.message().contains(hint) => failures.push(format!(
                "{yaml}\n    expected {path} mentioning {hint:?}\n    got      {e}"
            )),
            Err(e) => assert!(
                !e.to_string().contains("s3cret"),
                "a password in an error: {e}"
            ),
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[cfg(all(feature = "redis", feature = "postgres"))]
#[test]
fn object_size_limits_load_with_units() {
    let config =
        load("Caches: { Redis: { MaxObjectSize: 512KiB }, Postgres: { MaxObjectSize: 1048576 } }")
            .expect("sizes load");
    assert_eq!(config.connectors.redis.max_object_size, 512 << 10);
    assert_eq!(config.connectors.postgres.max_object_size, 1 << 20);
    let defaults = Loader::new().load().expect("defaults load");
    assert_eq!(defaults.connectors.redis.max_object_size, 16 << 20);
    assert_eq!(defaults.connectors.postgres.max_object_size, 16 << 20);
}

#[test]
fn a_missing_file_is_an_error() {
    let e = Loader::new()
        .file("/nonexistent/caches.yaml")
        .load()
        .unwrap_err();
    assert!(e.message().contains("does not exist"), "{e}");
}

#[test]
fn numbers_and_booleans_are_text_where_text_is_expected_and_secrets_never_show() {
    let config = load(
        "Caches:
  Redis: { Enabled: true, Password: 987654, Username: 42, Addr: 'localhost:6379' }
  Postgres: { Enabled: true, Password: 123456, Database: 2024, User: true, Host: db }
  Instance: { Connector: redis }",
    )
    .expect("numbers and booleans are accepted as text");
    assert_eq!(config.connectors.redis.password, "987654");
    assert_eq!(config.connectors.redis.username, "42");
    assert_eq!(config.connectors.postgres.password, "123456");
    assert_eq!(config.connectors.postgres.database, "2024");
    assert_eq!(config.connectors.postgres.user, "true");
    // A value that cannot be text: the error names the key and the kind of value, never the
    // value itself.
    for yaml in [
        "Caches: { Redis: { Password: [987654, s3cret] } }",
        "Caches: { Redis: { URL: { s3cret: 1 } } }",
        "Caches: { Postgres: { Password: { s3cret: 987654 } } }",
    ] {
        let e = load(yaml).unwrap_err();
        assert!(
            !e.to_string().contains("s3cret") && !e.to_string().contains("987654"),
            "a secret in an error: {e}"
        );
        assert!(
            e.path().ends_with("Password") || e.path().ends_with("URL"),
            "{e}"
        );
    }
}

#[test]
fn environment_secrets_stay_text_exactly_as_written() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("APP_CACHES_CONNECTORS_REDIS_PASSWORD", "012345");
        jail.set_env("APP_CACHES_CONNECTORS_REDIS_ENABLED", "true");
        jail.set_env("APP_CACHES_CONNECTORS_POSTGRES_DATABASE", "2024");
        jail.set_env("APP_CACHES_CONNECTORS_POSTGRES_PASSWORD", "true");
        jail.set_env("APP_CACHES_CONNECTORS_MEMORY_CAPACITY", "500");
        let config = Loader::new().env_prefix("APP").load().expect("loads");
        assert_eq!(
            config.connectors.redis.password, "012345",
            "not the number 12345"
        );
        assert!(config.connectors.redis.enabled);
        assert_eq!(config.connectors.postgres.database, "2024");
        assert_eq!(config.connectors.postgres.password, "true");
        assert_eq!(config.connectors.memory.capacity, 500);
        Ok(())
    });
}

#[test]
fn declared_purposes_with_underscores_work_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("APP_CACHES_USER_PROFILE_MAXAGE", "5m");
        jail.set_env("APP_CACHES_USER_PROFILE_CONNECTOR", "memory");
        jail.set_env("APP_CACHES_CONNECTORS_MEMORY_ENABLED", "true");
        let config = Loader::new()
            .purpose("user_profile")
            .env_prefix("APP")
            .load()
            .expect("loads");
        let settings = config.settings("user_profile").expect("declared");
        assert_eq!(settings.max_age, Duration::from_secs(300));
        assert_eq!(settings.connector_name(), "memory");
        Ok(())
    });
}

#[test]
fn an_undeclared_purpose_with_underscores_is_named_whole_from_the_environment() {
    // (variable, the key path the error must name)
    let cases = [
        ("APP_CACHES_NOT_DECLARED_MAXAGE", "Caches.not_declared"),
        (
            "APP_CACHES_NOT_DECLARED_NEAR_ENABLED",
            "Caches.not_declared",
        ),
        ("APP_CACHES_NOT_DECLARED", "Caches.not_declared"),
        ("APP_CACHES_USER_PROFILES_CONNECTOR", "Caches.user_profiles"),
        ("APP_CACHES_SESSIONS_MAXAGE", "Caches.sessions"),
    ];
    for (variable, path) in cases {
        figment::Jail::expect_with(|jail| {
            jail.set_env(variable, "5m");
            let error = Loader::new()
                .purpose("user_profile")
                .env_prefix("APP")
                .load()
                .expect_err("an undeclared purpose");
            assert_eq!(error.path(), path, "{variable}: {error}");
            assert!(error.message().starts_with("unknown key"), "{error}");
            Ok(())
        });
    }
    // The same purpose in a file is one key already.
    let error = load("Caches: { not_declared: { MaxAge: 5m } }").expect_err("undeclared");
    assert_eq!(error.path(), "Caches.not_declared", "{error}");
}

#[test]
fn read_through_settings_load() {
    let config = load("Caches: { Instance: { MaxAge: 5m, MaxStale: 1h, RefreshAhead: 0.8 } }")
        .expect("loads");
    let read = config.instance.read_through();
    assert_eq!(read.max_stale, Duration::from_secs(3600));
    assert_eq!(read.refresh_ahead, 0.8);
    assert!(read.wants_refresh(Duration::from_secs(240)));
    assert!(!read.wants_refresh(Duration::from_secs(239)));
    let defaults = Loader::new().load().unwrap();
    assert_eq!(defaults.instance.max_stale, Duration::ZERO);
    assert_eq!(defaults.instance.refresh_ahead, 0.0);
}

/// TLS for both remote connectors as a configuration file and the environment write it; the
/// files' keys report their full path when a file is missing.
#[cfg(all(feature = "redis", feature = "postgres", feature = "tls"))]
#[test]
fn tls_blocks_load_for_both_connectors() {
    figment::Jail::expect_with(|jail| {
        jail.set_env(
            "TLSAPP_CACHES_CONNECTORS_POSTGRES_TLS_INSECURESKIPVERIFY",
            "true",
        );
        let config = Loader::new()
            .yaml(
                "Caches:
  Connectors:
    Redis:
      Enabled: true
      EnableTLS: true
      TLS: { InsecureSkipVerify: true }
    Postgres:
      Enabled: true
      SSLMode: require
",
            )
            .env_prefix("TLSAPP")
            .load()
            .unwrap();
        assert!(config.connectors.redis.enable_tls);
        assert!(config.connectors.redis.tls.insecure_skip_verify);
        assert_eq!(config.connectors.postgres.ssl_mode, "require");
        assert!(config.connectors.postgres.tls.insecure_skip_verify);

        let missing = Loader::new()
            .yaml(
                "Caches: { Postgres: { Enabled: true, SSLMode: verify-full, TLS: { CAFile: /nonexistent/ca.pem } } }",
            )
            .load()
            .unwrap_err();
        assert_eq!(missing.path(), "Caches.Connectors.Postgres.TLS.CAFile");
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
        let typo = Loader::new()
            .yaml("Caches: { Redis: { Enabled: true, TLS: { CAFiel: /ca.pem } } }")
            .load()
            .unwrap_err();
        assert!(typo.to_string().contains("CAFile"), "{typo}");
        Ok(())
    });
}

#[test]
fn a_loader_never_shows_the_text_it_was_given() {
    let loader = Loader::new()
        .yaml("Caches: { Connectors: { Redis: { Enabled: true, Password: s3cret-pw } } }")
        .file("/etc/app/caches.yaml");
    let shown = format!("{loader:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(
        shown.contains("/etc/app/caches.yaml"),
        "files are named: {shown}"
    );
}

/// The negative values go-redis documents (and the reference's defaults write, e.g.
/// `ConnMaxLifetime: -1`) load: each as what 0 means for its key. A negative cache duration
/// stays an error.
#[cfg(feature = "redis")]
#[test]
fn the_references_negative_redis_values_load_as_off() {
    let config = load(
        "Caches:
  Connectors:
    Redis:
      Enabled: true
      MaxRetries: -1
      MinRetryBackoff: -1
      MaxRetryBackoff: -1
      ReadTimeout: -1
      WriteTimeout: -2
      ConnMaxIdleTime: -1
      ConnMaxLifetime: -1
",
    )
    .unwrap();
    let redis = &config.connectors.redis;
    assert_eq!(
        redis.conn_max_lifetime,
        Duration::ZERO,
        "never replaced by age"
    );
    assert_eq!(redis.conn_max_idle_time, Duration::ZERO, "idle ones kept");
    assert_eq!(
        (
            redis.read_timeout,
            redis.write_timeout,
            redis.min_retry_backoff,
            redis.max_retry_backoff
        ),
        (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO
        ),
        "every negative duration reads as 0, what the field documents 0 to mean"
    );
    let effective = redis.clone().with_default_timeouts();
    assert_eq!(
        (effective.read_timeout, effective.write_timeout),
        (Duration::from_secs(3), Duration::from_secs(3)),
        "no unbounded operation: the default limit"
    );
    let error = load("Caches: { Instance: { MaxAge: -1h } }").unwrap_err();
    assert!(
        error.to_string().contains("Caches.Instance.MaxAge"),
        "{error}"
    );
    let error = load("Caches: { Connectors: { Redis: { ConnMaxLifetime: -x } } }").unwrap_err();
    assert!(error.to_string().contains("ConnMaxLifetime"), "{error}");
}
