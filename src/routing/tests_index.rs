//! The indexed route selection chooses the same route as the linear walk (the reference), for
//! random rule sets and calls drawn from small alphabets so that conditions collide often.

use super::*;
use crate::config::{Cidr, Conditions};
use proptest::prelude::*;

const BASE: &str = "listen = [\"udp:127.0.0.1:5060\"]\n[emergency]\nnumbers = [\"911\"]\n\
                    [[targets]]\nid = \"a\"\nuri = \"sip:127.0.0.1:5071\"\nfailure_domain = \"x\"\n\
                    [default_route]\nchain = [\"a\"]\n";

const URNS: &[&str] = &[
    "urn:service:sos",
    "urn:service:sos.fire",
    "urn:service:sos.police",
    "urn:service:counseling",
];
const DIALLED: &[&str] = &["911", "112", "933"];
const BLOCKS: &[&str] = &[
    "192.0.2.0/24",
    "192.0.2.8/29",
    "0.0.0.0/0",
    "198.51.100.7",
    "2001:db8::/32",
    "::/0",
];
const HEADERS: &[(&str, &str)] = &[("x-a", "1"), ("x-a", "2"), ("x-b", "1")];
const RURIS: &[&str] = &[
    "urn:service:sos",
    "urn:service:sos.fire",
    "urn:service:sos.fire.wildland",
    "URN:Service:SOS.Police",
    "urn:service:sosx",
    "urn:service:counseling",
    "sip:911@127.0.0.1",
    "tel:112",
    "sip:933;phone-context=+1@h",
    "sip:127.0.0.1",
    "garbage",
];
const SOURCES: &[&str] = &[
    "192.0.2.9",
    "192.0.2.200",
    "198.51.100.7",
    "::ffff:192.0.2.9",
    "2001:db8::1",
    "2001:db9::1",
    "10.0.0.1",
];

fn pick<T: Clone + std::fmt::Debug + 'static>(
    from: &'static [T],
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(proptest::sample::select(from), 0..=max)
}

fn digits(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(&['+', '1', '2'][..]), 0..=max)
        .prop_map(|v| v.into_iter().collect())
}

fn conditions() -> impl Strategy<Value = Conditions> {
    (
        prop_oneof![3 => Just(vec![]), 1 => pick(URNS, 2)],
        prop_oneof![3 => Just(vec![]), 1 => pick(DIALLED, 2)],
        prop_oneof![3 => Just(vec![]), 1 => pick(BLOCKS, 2)],
        prop_oneof![2 => Just(vec![]), 2 => proptest::collection::vec(digits(3), 1..=3)],
        prop_oneof![3 => Just(vec![]), 1 => pick(HEADERS, 2)],
    )
        .prop_map(|(urns, dialled, blocks, callers, headers)| Conditions {
            service_urns: urns.iter().map(|s| s.to_string()).collect(),
            dialled: dialled.iter().map(|s| s.to_string()).collect(),
            sources: blocks.iter().filter_map(|b| Cidr::parse(b).ok()).collect(),
            caller_prefixes: callers,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
}

fn call() -> impl Strategy<Value = CallFacts> {
    (
        proptest::sample::select(RURIS),
        proptest::option::of(digits(5)),
        proptest::sample::select(SOURCES),
        pick(HEADERS, 3),
        any::<bool>(),
    )
        .prop_map(|(ruri, caller, source, headers, pad)| CallFacts {
            request_uri: ruri.as_bytes().to_vec(),
            caller,
            source: source.parse().unwrap(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    let v = if pad { format!(" {v} ") } else { v.to_string() };
                    (n.to_string(), v.into_bytes())
                })
                .collect(),
        })
}

fn rules_with(conds: Vec<Conditions>) -> Rules {
    let (mut rules, _) = Rules::parse(BASE, "t.toml").unwrap();
    let template = (*rules.default_route).clone();
    rules.routes = conds
        .into_iter()
        .enumerate()
        .map(|(i, conditions)| {
            Arc::new(Route {
                id: format!("r{i}").into(),
                conditions,
                ..template.clone()
            })
        })
        .collect();
    rules.index = index::Index::build(&rules.routes);
    rules
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn indexed_selection_chooses_the_route_the_linear_walk_chooses(
        conds in proptest::collection::vec(conditions(), 0..12),
        calls in proptest::collection::vec(call(), 1..8),
    ) {
        let rules = rules_with(conds);
        for c in &calls {
            let fast = rules.select(c);
            let slow = rules.select_linear(c);
            prop_assert_eq!(&fast.route.id, &slow.route.id, "call {:?}", c);
            prop_assert_eq!(fast.emergency, slow.emergency);
            prop_assert_eq!(fast.explain(c), slow.explain(c));
            prop_assert_eq!(fast.reason.to_string(), slow.reason.to_string());
        }
    }
}

#[test]
fn many_caller_prefixes_select_the_route_of_the_longest_path() {
    let conds = (0..1000)
        .map(|i| Conditions {
            caller_prefixes: vec![format!("+1{i:04}")],
            ..Conditions::default()
        })
        .collect();
    let rules = rules_with(conds);
    let c = CallFacts {
        request_uri: b"urn:service:sos".to_vec(),
        caller: Some("+109995551234".into()),
        source: "192.0.2.1".parse().unwrap(),
        headers: vec![],
    };
    assert_eq!(&*rules.select(&c).route.id, "r999");
    assert_eq!(&*rules.select_linear(&c).route.id, "r999");
}
