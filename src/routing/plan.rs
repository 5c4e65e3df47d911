//! The failover plan for one call: the route's chain reordered by readiness.

use super::{Readiness, Route, Rules, Target};
use std::sync::Arc;

/// The failover plan: targets of `route` in the order to try them. Ready targets first in chain order,
/// then not-ready ones in chain order, then disabled ones in chain order. Every chain target exactly once.
///
/// Not-ready targets stay in the plan: health can be wrong (a probe path that fails while calls
/// would pass), and trying a doubtful target beats giving up. Disabled ones come last because an
/// operator switched them off on purpose, yet an emergency call still tries them before failing.
pub fn plan(
    rules: &Rules,
    route: &Route,
    readiness: &dyn Fn(&str) -> Readiness,
) -> Vec<Arc<Target>> {
    let mut seen = Vec::with_capacity(route.chain.len());
    let mut ranked: Vec<(u8, Arc<Target>)> = Vec::with_capacity(route.chain.len());
    for id in &route.chain {
        // Chains are validated (known ids, no repeats); this guards a hand-built Route.
        let Some(target) = rules.target(id) else {
            continue;
        };
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let rank = match readiness(id) {
            Readiness::Ready => 0,
            Readiness::NotReady => 1,
            Readiness::Disabled => 2,
        };
        ranked.push((rank, target.clone()));
    }
    // Stable: chain order is kept within each group.
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, t)| t).collect()
}
