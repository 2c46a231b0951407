//! `audit check`: verify every stored chain (or one) against its checkpoints and head.

use futures::TryStreamExt;

use crate::audit::signing::KeyRing;
use crate::audit::verify::{Break, ChainSummary, ChainVerifier};
use crate::error::Result;
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub chain: String,
    pub result: std::result::Result<ChainSummary, Break>,
}

/// Verifies the named chains (all stored chains when `only` is `None`). A storage error aborts
/// the check; a broken chain is reported and the others are still checked.
pub async fn check_store(
    store: &dyn Store,
    keys: &KeyRing,
    only: Option<&str>,
) -> Result<Vec<ChainReport>> {
    let chains = match only {
        Some(chain) => vec![chain.to_owned()],
        None => store.chain_names().await?,
    };
    let mut reports = Vec::with_capacity(chains.len());
    for chain in chains {
        let result = check_chain(store, keys, &chain).await?;
        reports.push(ChainReport { chain, result });
    }
    Ok(reports)
}

pub async fn check_chain(
    store: &dyn Store,
    keys: &KeyRing,
    chain: &str,
) -> Result<std::result::Result<ChainSummary, Break>> {
    let mut verifier = ChainVerifier::new(chain, keys, store.checkpoints(chain).await?);
    let mut entries = store.entries(chain);
    while let Some(row) = entries.try_next().await? {
        if let Err(broken) = verifier.push(&row) {
            return Ok(Err(broken));
        }
    }
    drop(entries);
    let head = store.head(chain).await?;
    Ok(verifier.finish(head.as_ref()))
}

/// Verifies a chain already read into memory (tests, and exports held by a customer).
pub fn verify_records<'r>(
    chain: &str,
    keys: &KeyRing,
    checkpoints: Vec<crate::audit::records::CheckpointRecord>,
    entries: impl IntoIterator<Item = &'r crate::audit::records::EntryRecord>,
    head: Option<&crate::audit::records::HeadRecord>,
) -> std::result::Result<ChainSummary, Break> {
    let mut verifier = ChainVerifier::new(chain, keys, checkpoints);
    for row in entries {
        verifier.push(row)?;
    }
    verifier.finish(head)
}

/// The keys `audit check` trusts: those registered in the database (each registration is itself
/// an entry of the system chain) plus any supplied by the operator.
pub async fn keyring(
    store: &dyn Store,
    extra: impl IntoIterator<Item = crate::audit::signing::PublicKey>,
) -> Result<KeyRing> {
    let mut ring = KeyRing::new(store.signing_keys().await?);
    for key in extra {
        ring.add(key);
    }
    Ok(ring)
}
