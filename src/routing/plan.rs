//! The failover plan for one call: the route's chain reordered by readiness.

use super::{Readiness, Route, Rules, Target};
use std::sync::Arc;

/// The failover plan: targets of `route` in the order to try them. Ready targets first in chain order,
/// then suspect ones, then not-ready ones, then disabled ones, each group in chain order. Every chain target exactly once.
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
            Readiness::Suspect => 1,
            Readiness::NotReady => 2,
            Readiness::Disabled => 3,
        };
        ranked.push((rank, target.clone()));
    }
    // Stable: chain order is kept within each group.
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Rules with targets t0..t9 and a default route whose chain is `chain` (indices, distinct).
    fn rules_with_chain(chain: &[usize]) -> Rules {
        let mut text = String::from("listen = [\"udp:127.0.0.1:5060\"]\n");
        for i in 0..10 {
            text += &format!(
                "[[targets]]\nid = \"t{i}\"\nuri = \"sip:127.0.0.1:{}\"\nfailure_domain = \"d{i}\"\n",
                5100 + i
            );
        }
        let ids: Vec<String> = chain.iter().map(|i| format!("\"t{i}\"")).collect();
        text += &format!("[default_route]\nchain = [{}]\n", ids.join(", "));
        Rules::parse(&text, "prop.toml")
            .expect("generated rules are valid")
            .0
    }

    fn readiness_of(code: u8) -> Readiness {
        match code % 3 {
            0 => Readiness::Ready,
            1 => Readiness::NotReady,
            _ => Readiness::Disabled,
        }
    }

    /// A random chain of distinct target indices (1-10 long) and a readiness code per target.
    fn case() -> impl Strategy<Value = (Vec<usize>, Vec<u8>)> {
        (
            Just((0..10).collect::<Vec<usize>>())
                .prop_shuffle()
                .prop_flat_map(|all| (1..=10usize).prop_map(move |n| all[..n].to_vec())),
            proptest::collection::vec(0u8..3, 10),
        )
    }

    fn run(chain: &[usize], ready: &[u8]) -> (Rules, Vec<Arc<Target>>) {
        let rules = rules_with_chain(chain);
        let readiness = |id: &str| readiness_of(ready[id[1..].parse::<usize>().unwrap()]);
        let out = plan(&rules, &rules.default_route, &readiness);
        (rules, out)
    }

    fn rank_of(t: &Target, ready: &[u8]) -> u8 {
        ready[t.id[1..].parse::<usize>().unwrap()] % 3
    }

    proptest! {
        #[test]
        fn invariant2_plan_never_yields_a_target_twice((chain, ready) in case()) {
            let (_, out) = run(&chain, &ready);
            let mut ids: Vec<&str> = out.iter().map(|t| &*t.id).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), out.len());
        }

        #[test]
        fn invariant2_plan_yields_every_chain_target_exactly_once((chain, ready) in case()) {
            let (rules, out) = run(&chain, &ready);
            prop_assert_eq!(out.len(), rules.default_route.chain.len());
            for id in &rules.default_route.chain {
                prop_assert_eq!(out.iter().filter(|t| &t.id == id).count(), 1);
            }
        }

        #[test]
        fn invariant2_plan_yields_ready_before_not_ready_before_disabled((chain, ready) in case()) {
            let (_, out) = run(&chain, &ready);
            let ranks: Vec<u8> = out.iter().map(|t| rank_of(t, &ready)).collect();
            prop_assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "ranks {:?}", ranks);
        }

        #[test]
        fn invariant2_plan_keeps_chain_order_within_each_group((chain, ready) in case()) {
            let (rules, out) = run(&chain, &ready);
            let pos = |t: &Target| rules.default_route.chain.iter().position(|id| *id == t.id).unwrap();
            for w in out.windows(2) {
                if rank_of(&w[0], &ready) == rank_of(&w[1], &ready) {
                    prop_assert!(pos(&w[0]) < pos(&w[1]));
                }
            }
        }
    }
}
