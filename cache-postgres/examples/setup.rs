//! The setup step for operators: creates (or updates) the cache's schema, tables and function.
//!
//! ```text
//! cargo xtask pg-setup postgres://admin@db:5432/app [schema]
//! cargo run -p cache-postgres --example setup -- postgres://admin@db:5432/app [schema]
//! ```
//!
//! Idempotent and safe while services use the cache. Exits with 1 and the reason on failure.

use cache_postgres::{PostgresConfig, PostgresConnector};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: setup <postgres URL> [schema (default cache)]");
        std::process::exit(2);
    };
    let mut config = PostgresConfig::with_url(url);
    if let Some(schema) = args.next() {
        config.schema = schema;
    }
    let result = async { PostgresConnector::new(&config, "setup")?.setup().await }.await;
    match result {
        Ok(()) => println!(
            "cache tables are set up in schema {:?} of {}",
            config.schema,
            config.redacted_url()
        ),
        Err(e) => {
            eprintln!("setup failed: {e}");
            std::process::exit(1);
        }
    }
}
