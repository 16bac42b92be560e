use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::testing::{check_hook_splits, run_hook};

fn hook(config: &str) -> Rewrite {
    Rewrite::new(config).expect("config")
}

const BANNER: &str =
    r#"{"rules":[{"from":"SSH-2.0-OpenSSH_9.2","to":"SSH-2.0-Server","direction":"server-to-client"}]}"#;

#[test]
fn a_banner_is_rewritten_wherever_it_is_split() {
    let run = check_hook_splits(&hook(BANNER), Direction::ServerToClient, b"SSH-2.0-OpenSSH_9.2\r\nkex...");
    assert_eq!(run.output, b"SSH-2.0-Server\r\nkex...");
    // The other direction is left alone.
    let run = check_hook_splits(&hook(BANNER), Direction::ClientToServer, b"SSH-2.0-OpenSSH_9.2\r\n");
    assert_eq!(run.output, b"SSH-2.0-OpenSSH_9.2\r\n");
}

#[test]
fn rules_apply_in_order_and_everywhere() {
    let config = r#"{"rules":[{"from":"cat","to":"dog"},{"from":"ca","to":"CA"},{"from":"a","to":"aa"}]}"#;
    let run = check_hook_splits(&hook(config), Direction::ClientToServer, b"a cat, a cap, cats");
    assert_eq!(run.output, b"aa dog, aa CAp, dogs");
}

#[test]
fn a_start_of_a_match_at_the_end_is_released_when_the_side_ends() {
    let run = run_hook(&hook(BANNER), Direction::ServerToClient, &[b"SSH-2.0-Open"]);
    assert_eq!(run.output, b"SSH-2.0-Open");
}

#[test]
fn bad_configs_say_what_is_wrong() {
    assert_eq!(parse("null").map(|r| r.len()), Ok(0));
    let err = |c: &str| Rewrite::new(c).err().unwrap_or_default();
    assert!(err(r#"{"rules":[{"to":"x"}]}"#).contains("rules[0]: needs a non-empty `from`"));
    assert!(err(r#"{"rules":[{"from":"x","to":"y","direction":"up"}]}"#).contains("`direction` must be"));
    assert!(err("[1]").contains("mapping"));
}

proptest! {
    /// Whatever the stream and the rules, the output does not depend on
    /// how the stream is split.
    #[test]
    fn splits_never_change_the_output(
        stream in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c')], 0..40),
        from in "[abc]{1,4}",
        to in "[xyz]{0,3}",
    ) {
        let config = format!(r#"{{"rules":[{{"from":"{from}","to":"{to}"}},{{"from":"ab","to":"Q"}}]}}"#);
        check_hook_splits(&hook(&config), Direction::ClientToServer, &stream);
    }
}
