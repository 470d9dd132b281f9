//! The simulated service's own types, shared by the `demo` and `near_demo` examples: the
//! instances (by id and host) and organizations (by id and primary domain) a service of the
//! reference's kind reads on nearly every request, and how many of them there are.

use std::time::Duration;

use cache_config::Entry;
use serde::{Deserialize, Serialize};

pub(crate) const INSTANCES: usize = 20;
pub(crate) const DOMAINS_PER_INSTANCE: usize = 3;
pub(crate) const ORGS_PER_INSTANCE: usize = 100;
/// Time between two admin changes.
pub(crate) const CHANGE_EVERY: Duration = Duration::from_millis(2);

cache_config::index! {
    pub(crate) enum InstanceIndex {
        Id => "id",
        Host => "host",
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) hosts: Vec<String>,
    pub(crate) name: String,
    pub(crate) revision: u64,
}

impl Entry<InstanceIndex> for Instance {
    fn keys(&self, index: InstanceIndex) -> Vec<String> {
        match index {
            InstanceIndex::Id => vec![self.id.clone()],
            InstanceIndex::Host => self.hosts.clone(),
        }
    }
}

cache_config::index! {
    pub(crate) enum OrgIndex {
        Id => "id",
        PrimaryDomain => "primary_domain",
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Organization {
    pub(crate) instance_id: String,
    pub(crate) id: String,
    pub(crate) primary_domain: String,
    pub(crate) name: String,
    pub(crate) revision: u64,
}

impl Entry<OrgIndex> for Organization {
    /// Tenant-scoped keys: `<instance>-<org id>`, `<instance>-<domain>`.
    fn keys(&self, index: OrgIndex) -> Vec<String> {
        let key = match index {
            OrgIndex::Id => &self.id,
            OrgIndex::PrimaryDomain => &self.primary_domain,
        };
        vec![format!("{}-{}", self.instance_id, key)]
    }
}
