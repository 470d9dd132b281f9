//! The top-level README's "Using a cache" example, compiled and run: the code between the
//! `README begin` and `README end` lines below is the README's example as written there
//! (checked by `the_readme_shows_this_example`), against `cache-config` alone.

use std::error::Error;

#[tokio::test]
async fn using_a_cache() -> Result<(), Box<dyn Error>> {
    // README begin
    use cache_config::serde::{Deserialize, Serialize};
    use cache_config::{Caches, Entry, Loader, ObjectCache, index};

    index! { enum OrgIndex { Id => "id", Domain => "domain" } }

    #[derive(Serialize, Deserialize)]
    #[serde(crate = "cache_config::serde")] // serde through cache-config
    struct Org {
        id: String,
        domains: Vec<String>,
    }

    impl Entry<OrgIndex> for Org {
        fn keys(&self, index: OrgIndex) -> Vec<String> {
            match index {
                OrgIndex::Id => vec![self.id.clone()],
                OrgIndex::Domain => self.domains.clone(),
            }
        }
    }

    // The embedded defaults, then the service's YAML (or `.file(path)`), then MYAPP_CACHES_...
    let config = Loader::new()
        .yaml("Caches: { Memory: { Enabled: true }, Organization: { Connector: memory } }")
        .env_prefix("MYAPP")
        .load()?;
    let caches = Caches::start(&config, "v1.0.0")?; // the enabled connectors
    let orgs: ObjectCache<OrgIndex, Org> =
        caches.object_cache("organization", &[OrgIndex::Id, OrgIndex::Domain])?;

    orgs.set(Org {
        id: "42".into(),
        domains: vec!["acme.example".into()],
    })
    .await;
    let org = orgs.get(OrgIndex::Domain, "acme.example").await; // Some(Arc<Org>)
    assert!(org.is_some_and(|org| org.id == "42"));
    // or read-through, safe against a load racing with an invalidation:
    let org = orgs
        .get_or_load(OrgIndex::Id, "42", || load_org_from_db("42"))
        .await?;
    assert!(org.is_some());
    orgs.invalidate(OrgIndex::Id, &["42"]).await?; // gone through every index
    assert!(orgs.get(OrgIndex::Domain, "acme.example").await.is_none());
    caches.shutdown().await;
    // README end

    /// The service's own database query.
    async fn load_org_from_db(id: &str) -> Result<Option<Org>, std::io::Error> {
        Ok(Some(Org {
            id: id.to_owned(),
            domains: vec!["acme.example".to_owned()],
        }))
    }
    Ok(())
}

#[test]
fn the_readme_shows_this_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    // Only in the workspace: a packaged cache-config has no top-level README.
    let Ok(readme) = std::fs::read_to_string(path) else {
        return;
    };
    let section = readme
        .split_once("\n## Using a cache\n")
        .expect("the README has a section `## Using a cache`")
        .1;
    let shown = section
        .split_once("```rust\n")
        .and_then(|(_, rest)| rest.split_once("\n```\n"))
        .expect("the section shows a ```rust block")
        .0;
    let source = include_str!("readme.rs");
    let tested: Vec<&str> = source
        .split_once("    // README begin\n")
        .and_then(|(_, rest)| rest.split_once("\n    // README end\n"))
        .expect("the markers")
        .0
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect();
    assert_eq!(
        shown,
        tested.join("\n"),
        "the README's example differs from the code of `using_a_cache` in {}; keep them equal",
        file!()
    );
}
