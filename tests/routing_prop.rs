//! Property tests of the route name matcher (RFC 6125): case and one trailing dot never
//! matter; a wildcard covers names with exactly one more label, never the suffix itself or
//! deeper names.

use pgt_proxy::routing::{matches, normalize};
use proptest::prelude::*;

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9-]{0,10}"
}

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(label(), 1..5).prop_map(|l| l.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn exact_names_match_themselves_in_any_case(n in name(), dot in any::<bool>()) {
        let sent = if dot { format!("{}.", n.to_uppercase()) } else { n.to_uppercase() };
        prop_assert!(matches(&normalize(&n), &normalize(&sent)));
    }

    #[test]
    fn a_wildcard_covers_exactly_one_more_label(suffix in name(), first in label(), extra in label()) {
        let pattern = normalize(&format!("*.{suffix}"));
        let one = normalize(&format!("{first}.{suffix}"));
        let two = normalize(&format!("{extra}.{first}.{suffix}"));
        prop_assert!(matches(&pattern, &one));
        prop_assert!(!matches(&pattern, &two));
        prop_assert!(!matches(&pattern, &normalize(&suffix)));
    }

    #[test]
    fn different_names_do_not_match(a in name(), b in name()) {
        prop_assume!(normalize(&a) != normalize(&b));
        prop_assert!(!matches(&normalize(&a), &normalize(&b)));
    }
}
