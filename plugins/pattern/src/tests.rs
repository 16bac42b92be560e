//! Native tests of the `pattern` detector: config parsing and its error
//! messages (`` rules[INDEX] (protocol "NAME"): key `KEY`: … ``), each rule
//! kind, `offset`, `min_length`, `transport`, rule order, `NeedMore` counts,
//! and property tests of `detect` and of the config parser.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::Transport;
use serde_json::json;

fn pattern(config: serde_json::Value) -> Pattern {
    Pattern::new(&config.to_string()).expect("valid config")
}

fn rules(rules: serde_json::Value) -> Pattern {
    pattern(json!({ "rules": rules }))
}

fn error(config: serde_json::Value) -> String {
    match Pattern::new(&config.to_string()) {
        Ok(_) => panic!("{config}: expected an error"),
        Err(err) => err,
    }
}

fn rule_error(rule: serde_json::Value) -> String {
    error(json!({ "rules": [{ "protocol": "ok", "prefix": "x" }, rule] }))
}

fn tcp(p: &Pattern, data: &[u8]) -> Verdict {
    p.detect(data, &Peer::test(Transport::Tcp))
}

fn udp(p: &Pattern, data: &[u8]) -> Verdict {
    p.detect(data, &Peer::test(Transport::Udp))
}

/// The protocol and `rule` attribute of a match.
fn matched(verdict: Verdict) -> (String, String) {
    match verdict {
        Verdict::Matched(d) => {
            let rule = d.attribute("rule").expect("rule attribute").to_string();
            (d.protocol, rule)
        }
        other => panic!("expected a match, got {other:?}"),
    }
}

/// Regexes nested deeper than [`rules::REGEX_NEST_LIMIT`] are a config
/// error, not a stack overflow inside the sandbox's 64 KiB stack: groups,
/// and repetitions stacked on one atom (the fuzzer's `a*****…`).
#[test]
fn deeply_nested_regexes_are_refused() {
    let groups = format!("{}a{}", "(".repeat(100), ")".repeat(100));
    let stacked = format!("^a{}", "*+".repeat(150));
    for regex in [groups, stacked] {
        let err = rule_error(json!({ "protocol": "deep", "regex": regex }));
        assert!(err.contains("nest"), "{err}");
    }
    let fits = format!("^{}a{}", "(".repeat(20), ")".repeat(20));
    rules(json!([{ "protocol": "ok", "regex": fits }]));
}

#[test]
fn a_rule_whose_match_the_host_would_refuse_is_refused() {
    // The host fails a call whose answer has a string over 1,024 bytes,
    // over 64 attributes or over 16 KiB of strings, and counts it against
    // the plugin: such a rule would turn the detector off.
    let err = rule_error(json!({ "protocol": "p".repeat(1025), "prefix": "x" }));
    assert!(err.contains("protocol") && err.contains("1025 bytes"), "{err}");
    let err = rule_error(json!({ "protocol": "p", "prefix": "x", "attributes": { "k": "v".repeat(1025) } }));
    assert!(err.contains("attributes.k"), "{err}");
    let many: serde_json::Map<String, serde_json::Value> = (0..64).map(|i| (format!("a{i}"), json!(1))).collect();
    let err = rule_error(json!({ "protocol": "p", "prefix": "x", "attributes": many }));
    assert!(err.contains("64 attributes"), "{err}");
    let big: serde_json::Map<String, serde_json::Value> =
        (0..20).map(|i| (format!("a{i}"), json!("v".repeat(1000)))).collect();
    let err = rule_error(json!({ "protocol": "p", "prefix": "x", "attributes": big }));
    assert!(err.contains("more than 16384"), "{err}");
    let most: serde_json::Map<String, serde_json::Value> = (0..63).map(|i| (format!("a{i}"), json!(1))).collect();
    rules(json!([{ "protocol": "p".repeat(1024), "prefix": "x", "attributes": most }]));
}

#[test]
fn null_and_empty_configs_never_match() {
    for config in ["null", "{}", r#"{"rules": null}"#, r#"{"rules": []}"#] {
        let p = Pattern::new(config).expect(config);
        assert!(p.rules().is_empty());
        assert_eq!(tcp(&p, b""), Verdict::NoMatch);
        assert_eq!(udp(&p, b"anything"), Verdict::NoMatch);
    }
}

#[test]
fn top_level_errors() {
    assert!(error(json!({ "rule": [] })).contains("unknown key `rule`"));
    assert!(error(json!([1])).contains("must be a mapping with a `rules` list, found a list"));
    assert!(error(json!({ "rules": {} })).contains("key `rules`: must be a list of rules, found a mapping"));
    assert!(error(json!({ "rules": ["x"] })).starts_with("rules[0]: must be a mapping"));
    assert!(Pattern::new("{").is_err_and(|e| e.starts_with("config is not valid JSON")));
}

#[test]
fn rule_errors_name_index_protocol_and_key() {
    let cases: &[(serde_json::Value, &str)] = &[
        (json!({ "prefix": "x" }), "rules[1] (no protocol): key `protocol`: required"),
        (json!({ "protocol": "", "prefix": "x" }), "rules[1] (no protocol): key `protocol`: must not be empty"),
        (
            json!({ "protocol": 7, "prefix": "x" }),
            "key `protocol`: must be text, found the number 7 (quote it in YAML)",
        ),
        (
            json!({ "protocol": "g", "prefix": "x", "colour": 1 }),
            r#"rules[1] (protocol "g"): key `colour`: unknown key"#,
        ),
        (json!({ "protocol": "g" }), r#"rules[1] (protocol "g"): needs one of the keys `prefix`, `prefixes`"#),
        (
            json!({ "protocol": "g", "prefix": "x", "hex": "00" }),
            r#"rules[1] (protocol "g"): key `hex`: not allowed together with `prefix`"#,
        ),
        (json!({ "protocol": "g", "prefix": "" }), r#"(protocol "g"): key `prefix`: must not be empty"#),
        (json!({ "protocol": "g", "prefix": "a\\qb" }), "key `prefix`: unknown escape `\\q` at character 2"),
        (json!({ "protocol": "g", "prefix": "\\x4" }), "key `prefix`: `\\x` at character 1 needs two hex digits"),
        (json!({ "protocol": "g", "prefix": "ab\\" }), "key `prefix`: ends with a lone `\\`"),
        (
            json!({ "protocol": "g", "prefix": "é€" }),
            "key `prefix`: character '€' (U+20AC) at character 2 is not a byte",
        ),
        (json!({ "protocol": "g", "prefixes": [] }), "key `prefixes`: must list at least one prefix"),
        (
            json!({ "protocol": "g", "prefixes": "ab" }),
            "key `prefixes`: must be a list of texts, found the text \"ab\"",
        ),
        (json!({ "protocol": "g", "prefixes": ["a", 1] }), "key `prefixes[1]`: must be text, found the number 1"),
        (json!({ "protocol": "g", "prefixes": ["a", "\\z"] }), "key `prefixes[1]`: unknown escape `\\z`"),
        (json!({ "protocol": "g", "hex": 1234 }), "key `hex`: must be text, found the number 1234 (quote it in YAML)"),
        (json!({ "protocol": "g", "hex": "abc" }), "key `hex`: has an odd number of hex digits (3)"),
        (json!({ "protocol": "g", "hex": "0g" }), "key `hex`: 'g' at character 2 is not a hex digit"),
        (json!({ "protocol": "g", "hex": " " }), "key `hex`: must not be empty"),
        (json!({ "protocol": "g", "regex": "(NICK" }), r#"(protocol "g"): key `regex`: unclosed group: `(`"#),
        (json!({ "protocol": "g", "regex": "a{3,1}" }), "key `regex`: invalid repetition count range"),
        (json!({ "protocol": "g", "regex": "x*" }), "key `regex`: matches zero bytes"),
        (
            json!({ "protocol": "g", "regex": "^a", "offset": 1 }),
            "key `offset`: applies to `prefix`, `prefixes` and `hex`",
        ),
        (json!({ "protocol": "g", "prefix": "a", "max_length": 9 }), "key `max_length`: applies to `regex` only"),
        (
            json!({ "protocol": "g", "regex": "a", "max_length": 0 }),
            "key `max_length`: must be a whole number from 1 to",
        ),
        (json!({ "protocol": "irc", "regex": "a", "max_length": 20000 }), "key `max_length`: must be a whole number"),
        (
            json!({ "protocol": "g", "regex": "a", "max_length": 4, "min_length": 5 }),
            "key `min_length`: 5 is more than",
        ),
        (json!({ "protocol": "g", "prefix": "a", "min_length": -1 }), "key `min_length`: must be a whole number"),
        (json!({ "protocol": "g", "prefix": "a", "offset": 1.5 }), "key `offset`: must be a whole number"),
        (
            json!({ "protocol": "g", "prefix": "ab", "offset": 16383 }),
            "key `offset`: offset 16383 plus the pattern's 2",
        ),
        (json!({ "protocol": "g", "prefix": "a", "transport": "TCP" }), "key `transport`: must be tcp, udp or any"),
        (json!({ "protocol": "g", "prefix": "a", "attributes": [] }), "key `attributes`: must be a mapping"),
        (
            json!({ "protocol": "g", "prefix": "a", "attributes": { "rule": "1" } }),
            "key `attributes.rule`: `rule` is reserved",
        ),
        (
            json!({ "protocol": "g", "prefix": "a", "attributes": { "k": null } }),
            "key `attributes.k`: must be text, a number",
        ),
        (
            json!({ "protocol": "g", "prefix": "a", "offset": null }),
            "key `offset`: must be a whole number from 0 to 16384, found nothing",
        ),
    ];
    for (rule, expected) in cases {
        let err = rule_error(rule.clone());
        assert!(err.starts_with("rules[1] ("), "{rule}: {err}");
        assert!(err.contains(expected), "{rule}:\n  got      {err}\n  expected {expected}");
        assert!(!err.contains('\n'), "{rule}: multi-line error {err}");
    }
    // The exact shape, once.
    assert_eq!(
        rule_error(json!({ "protocol": "irc", "regex": "^NICK", "max_length": 20000 })),
        r#"rules[1] (protocol "irc"): key `max_length`: must be a whole number from 1 to 16384, found the number 20000"#
    );
}

#[test]
fn prefix_escapes_and_latin1() {
    let p = rules(json!([
        { "protocol": "esc", "prefix": "\\r\\n\\t\\0\\\\\\x7F\\xfe" },
        // What a double-quoted YAML "\xff\x00" arrives as.
        { "protocol": "yaml", "prefix": "\u{ff}\u{0}" },
    ]));
    assert_eq!(matched(tcp(&p, b"\r\n\t\0\\\x7f\xfe!")).0, "esc");
    assert_eq!(matched(tcp(&p, b"\xff\x00")).0, "yaml");
    assert_eq!(tcp(&p, b"\xc3\xbf"), Verdict::NoMatch);
}

#[test]
fn prefix_waits_then_decides() {
    let p = rules(json!([{ "protocol": "gopher", "prefix": "GOPH" }]));
    assert_eq!(tcp(&p, b""), Verdict::NeedMore(4));
    assert_eq!(tcp(&p, b"GO"), Verdict::NeedMore(4));
    assert_eq!(tcp(&p, b"GX"), Verdict::NoMatch);
    assert_eq!(matched(tcp(&p, b"GOPH")), ("gopher".to_string(), "0".to_string()));
    assert_eq!(matched(tcp(&p, b"GOPHER\r\n")).0, "gopher");
}

#[test]
fn hex_at_offset() {
    let p = rules(json!([{ "protocol": "myproto", "hex": "DE ad\tbeef", "offset": 4 }]));
    assert_eq!(tcp(&p, b"\x00\x01"), Verdict::NeedMore(8));
    assert_eq!(tcp(&p, b"abcd\xde\xad"), Verdict::NeedMore(8));
    assert_eq!(tcp(&p, b"abcd\xde\xae"), Verdict::NoMatch);
    assert_eq!(matched(tcp(&p, b"abcd\xde\xad\xbe\xef")).0, "myproto");
    assert_eq!(tcp(&p, b"\xde\xad\xbe\xef\x00\x00\x00\x00"), Verdict::NoMatch);
}

#[test]
fn prefixes_alternatives() {
    let p = rules(
        json!([{ "protocol": "zmq", "prefixes": ["ABCDEF", "ABX", "Q"], "attributes": { "kind": "zeromq", "v": 3, "ok": true } }]),
    );
    assert_eq!(tcp(&p, b"AB"), Verdict::NeedMore(3));
    assert_eq!(tcp(&p, b"ABC"), Verdict::NeedMore(6));
    assert_eq!(tcp(&p, b"ABD"), Verdict::NoMatch);
    for data in [&b"ABX"[..], b"ABCDEF", b"Qx"] {
        let Verdict::Matched(d) = tcp(&p, data) else { panic!("{data:?}") };
        assert_eq!(d.protocol, "zmq");
        assert_eq!(
            d.attributes,
            [("rule", "0"), ("kind", "zeromq"), ("ok", "true"), ("v", "3")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}

#[test]
fn anchored_regex_rejects_early() {
    let p = rules(json!([{ "protocol": "irc", "regex": "^(NICK|USER|PASS|CAP) [^\r\n]*\r\n", "max_length": 512 }]));
    for data in [&b""[..], b"N", b"NIC", b"NICK", b"USER x", b"CAP LS 302\r"] {
        assert_eq!(tcp(&p, data), Verdict::NeedMore(0), "{data:?}");
    }
    assert_eq!(matched(tcp(&p, b"CAP LS 302\r\nNICK me\r\n")).0, "irc");
    for data in [&b"X"[..], b"NX", b"NICKS", b"CAP \n"] {
        assert_eq!(tcp(&p, data), Verdict::NoMatch, "{data:?}");
    }
    // A line that never ends is given up on at max_length.
    let mut long = b"USER ".to_vec();
    long.resize(511, b'a');
    assert_eq!(tcp(&p, &long), Verdict::NeedMore(0));
    long.push(b'a');
    assert_eq!(tcp(&p, &long), Verdict::NoMatch);
}

#[test]
fn unanchored_regex_waits_for_max_length() {
    let p = rules(json!([{ "protocol": "magic", "regex": "(?i)magic\\d", "max_length": 16 }]));
    assert_eq!(tcp(&p, b"xxxxxxxx"), Verdict::NeedMore(0));
    assert_eq!(matched(tcp(&p, b"xxxxMaGiC7")).0, "magic");
    assert_eq!(tcp(&p, &[b'x'; 16]), Verdict::NoMatch);
    // Only the first max_length bytes are looked at.
    assert_eq!(tcp(&p, b"xxxxxxxxxxxxxxxxmagic1"), Verdict::NoMatch);
}

#[test]
fn regex_is_over_bytes() {
    let p = rules(json!([
        { "protocol": "bin", "regex": "^\\x00\\xff.\\x80" },
        { "protocol": "latin1", "regex": "^\u{e9}[\u{e0}-\u{ff}]" },
    ]));
    assert_eq!(matched(tcp(&p, b"\x00\xff\xfe\x80")).0, "bin");
    assert_eq!(tcp(&p, b"\x00\xff\n\x80"), Verdict::NoMatch);
    assert_eq!(matched(tcp(&p, b"\xe9\xf0")).0, "latin1");
    assert_eq!(tcp(&p, b"\xc3\xa9"), Verdict::NoMatch);
    assert!(rule_error(json!({ "protocol": "g", "regex": "^\u{20ac}" })).contains("key `regex`: character '€'"));
}

#[test]
fn min_length_delays_a_match_only() {
    let p = rules(json!([{ "protocol": "gopher", "prefix": "/", "min_length": 3 }]));
    assert_eq!(tcp(&p, b""), Verdict::NeedMore(1));
    assert_eq!(tcp(&p, b"/"), Verdict::NeedMore(3));
    assert_eq!(tcp(&p, b"/a"), Verdict::NeedMore(3));
    assert_eq!(matched(tcp(&p, b"/ab")).0, "gopher");
    assert_eq!(tcp(&p, b"x"), Verdict::NoMatch);
    let p = rules(json!([{ "protocol": "r", "regex": "^ab", "min_length": 5 }]));
    assert_eq!(tcp(&p, b"a"), Verdict::NeedMore(0));
    assert_eq!(tcp(&p, b"ab"), Verdict::NeedMore(5));
    assert_eq!(tcp(&p, b"x"), Verdict::NoMatch);
    assert_eq!(matched(tcp(&p, b"abcde")).0, "r");
}

#[test]
fn transport_filter() {
    let p = rules(json!([
        { "protocol": "t", "prefix": "A", "transport": "tcp" },
        { "protocol": "u", "prefix": "A", "transport": "udp" },
        { "protocol": "any", "prefix": "B", "transport": "any" },
    ]));
    assert_eq!(matched(tcp(&p, b"A")).0, "t");
    assert_eq!(matched(udp(&p, b"A")), ("u".to_string(), "1".to_string()));
    assert_eq!(matched(udp(&p, b"B")).0, "any");
    assert_eq!(matched(tcp(&p, b"B")).0, "any");
    let only_udp = rules(json!([{ "protocol": "u", "prefix": "A", "transport": "udp" }]));
    assert_eq!(tcp(&only_udp, b""), Verdict::NoMatch);
}

#[test]
fn first_matching_rule_wins() {
    let p = rules(json!([
        { "protocol": "long", "prefix": "GET /special" },
        { "protocol": "get", "prefix": "GET" },
        { "protocol": "also", "regex": "^GET" },
    ]));
    assert_eq!(matched(tcp(&p, b"GET /special x")), ("long".to_string(), "0".to_string()));
    assert_eq!(matched(tcp(&p, b"GET /other")), ("get".to_string(), "1".to_string()));
    // A later rule that matches does not wait for an earlier one still waiting.
    assert_eq!(matched(tcp(&p, b"GET /sp")).0, "get");
    assert_eq!(tcp(&p, b"GE"), Verdict::NeedMore(0));
}

#[test]
fn need_more_is_the_smallest_wait() {
    let fixed = rules(json!([
        { "protocol": "a", "prefix": "abcdefgh" },
        { "protocol": "b", "prefix": "abcd" },
        { "protocol": "c", "hex": "61", "offset": 9 },
    ]));
    assert_eq!(tcp(&fixed, b"ab"), Verdict::NeedMore(4));
    assert_eq!(tcp(&fixed, b"x"), Verdict::NeedMore(10));
    assert_eq!(tcp(&fixed, b"xxxxxxxxxb"), Verdict::NoMatch);
    let mixed = rules(json!([{ "protocol": "a", "prefix": "abcd" }, { "protocol": "r", "regex": "^ab" }]));
    assert_eq!(tcp(&mixed, b"a"), Verdict::NeedMore(0));
    assert_eq!(tcp(&mixed, b"ax"), Verdict::NoMatch);
}

#[test]
fn regex_text_escapes_latin1() {
    assert_eq!(config::regex_text("a\u{ff}\\\u{e9}\\\\\u{80}").as_deref(), Ok("a\\xFF\\xE9\\\\\\x80"));
    assert_eq!(config::hex("0a FF\n1b").as_deref(), Ok(&[0x0a, 0xff, 0x1b][..]));
}

/// The rule set the property tests run against.
fn fuzz_pattern() -> Pattern {
    rules(json!([
        { "protocol": "p", "prefix": "AB\\x00C", "min_length": 6 },
        { "protocol": "h", "hex": "ffee", "offset": 3, "transport": "udp" },
        { "protocol": "alt", "prefixes": ["x", "xyz\\r\\n", "\\xff\\x00"] },
        { "protocol": "irc", "regex": "^(NICK|USER) [^\\r\\n]*\\r\\n", "max_length": 64 },
        { "protocol": "any", "regex": "(?i)hello\\s+world", "max_length": 40, "min_length": 12 },
        { "protocol": "dot", "regex": "^.{3}Z", "transport": "tcp" },
    ]))
}

/// JSON values made mostly of the keys a config has.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        prop::sample::select(crate::config::KEYS.iter().copied().chain(["rules", "rule"]).collect::<Vec<_>>())
            .prop_map(str::to_string),
        "[a-z_]{0,6}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (0u64..20000).prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "(\\\\[xrnt0\\\\q]?|[ -~]|\u{e9}|\u{20ac}|[0-9a-f ]|[()^$.*+?|{}\\[\\]]){0,12}"
            .prop_map(serde_json::Value::from),
        prop::sample::select(vec!["tcp", "udp", "any", "^a", "de ad", "\\xff"]).prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn detect_never_panics_and_waits_for_more(data in prop::collection::vec(any::<u8>(), 0..200), udp_peer: bool) {
        let p = fuzz_pattern();
        let peer = Peer::test(if udp_peer { Transport::Udp } else { Transport::Tcp });
        // Every prefix of the data, as the host would ask while bytes arrive.
        for len in 0..=data.len() {
            let verdict = p.detect(&data[..len], &peer);
            if let Verdict::NeedMore(n) = verdict {
                prop_assert!(n == 0 || n > len, "NeedMore({}) with {} bytes", n, len);
            }
        }
    }

    #[test]
    fn decided_match_holds_for_fixed_bytes(data in prop::collection::vec(any::<u8>(), 0..40), extra in prop::collection::vec(any::<u8>(), 0..10)) {
        // Fixed-bytes rules never change their mind once decided.
        let p = rules(json!([
            { "protocol": "a", "prefix": "ab", "min_length": 4 },
            { "protocol": "b", "hex": "00 01", "offset": 2 },
        ]));
        let longer = [&data[..], &extra[..]].concat();
        match tcp(&p, &data) {
            Verdict::Matched(d) => prop_assert_eq!(tcp(&p, &longer).detection().map(|m| m.protocol.clone()), Some(d.protocol)),
            Verdict::NoMatch => prop_assert_eq!(tcp(&p, &longer), Verdict::NoMatch),
            Verdict::NeedMore(_) => {}
        }
    }

    #[test]
    fn regex_decisions_are_final(data in prop::collection::vec(prop::sample::select(b"NICKUSR \r\nx".to_vec()), 0..40)) {
        // NoMatch and Matched never change as bytes arrive (no `$` here).
        let p = rules(json!([
            { "protocol": "irc", "regex": "^(NICK|USER) [^\r\n]*\r\n", "max_length": 30 },
            { "protocol": "k", "regex": "K\\s+x", "max_length": 24, "transport": "udp" },
        ]));
        for peer in [Peer::test(Transport::Tcp), Peer::test(Transport::Udp)] {
            let last = p.detect(&data, &peer);
            for len in 0..data.len() {
                match p.detect(&data[..len], &peer) {
                    Verdict::NoMatch => prop_assert_eq!(&last, &Verdict::NoMatch, "after {} bytes", len),
                    Verdict::Matched(d) => prop_assert_eq!(last.detection(), Some(&d), "after {} bytes", len),
                    Verdict::NeedMore(_) => {}
                }
            }
        }
    }

    #[test]
    fn config_parser_never_panics_on_json(value in json_value()) {
        let _ = Pattern::new(&value.to_string());
        let _ = Pattern::new(&json!({ "rules": [value] }).to_string());
    }

    #[test]
    fn config_parser_never_panics_on_text(text in "\\PC{0,64}") {
        let _ = Pattern::new(&text);
        let _ = Pattern::new(&json!({ "rules": [{ "protocol": "x", "regex": text.clone() }] }).to_string());
        let _ = Pattern::new(&json!({ "rules": [{ "protocol": "x", "prefix": text.clone() }] }).to_string());
        let _ = Pattern::new(&json!({ "rules": [{ "protocol": "x", "hex": text }] }).to_string());
    }
}
