//! Property-based fuzzing of the detector with proptest: arbitrary bytes,
//! bytes behind a plausible Initial header, byte flips, truncations and
//! splices of a real three-datagram capture. The detector must never panic,
//! must return (no endless loop), and `NeedMore(n)` must have `n == 0` or
//! `n > data.len()`.

use super::{datagrams, detect};
use crate::Verdict;
use proptest::prelude::*;

fn capture() -> Vec<u8> {
    datagrams(include_bytes!("../../testdata/aioquic_v1_3dgrams.bin")).concat()
}

fn check(data: &[u8]) -> Verdict {
    let verdict = detect(data);
    if let Verdict::NeedMore(n) = verdict {
        assert!(n == 0 || n > data.len(), "NeedMore({n}) for {} bytes", data.len());
    }
    verdict
}

#[test]
fn every_truncation_of_a_real_flight() {
    // Three 1200-byte datagrams; the last Initial packet ends at byte 290 of
    // the third (aioquic pads with zero bytes after it).
    const COMPLETE: usize = 2 * 1200 + 290;
    let data = capture();
    for len in 0..=data.len() {
        let verdict = check(&data[..len]);
        match len {
            ..1200 => assert_eq!(verdict, Verdict::NoMatch, "prefix {len}"),
            1200..COMPLETE => assert_eq!(verdict, Verdict::NeedMore(0), "prefix {len}"),
            _ => assert!(verdict.is_match(), "prefix {len}: {verdict:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..4000)) {
        check(&data);
    }

    #[test]
    fn bytes_behind_a_plausible_header(
        version in prop_oneof![Just(0x0000_0001u32), Just(0x6b33_43cf)],
        first in 0xc0u8..=0xff,
        dcid in proptest::collection::vec(any::<u8>(), 8..=20),
        rest in proptest::collection::vec(any::<u8>(), 1150..2600),
    ) {
        let mut data = vec![first];
        data.extend(version.to_be_bytes());
        data.push(dcid.len() as u8);
        data.extend(&dcid);
        data.extend([0, 0, 0x44, 0xb0]); // no SCID, no token, Length 1200
        data.extend(rest);
        check(&data);
    }

    #[test]
    fn byte_flips_of_a_real_flight(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = capture();
        for (at, xor) in &flips {
            let at = at.index(data.len());
            data[at] ^= xor;
        }
        check(&data);
        let cut = cut.index(data.len());
        check(&data[..cut]);
    }

    #[test]
    fn splices_of_a_real_flight(
        pieces in proptest::collection::vec((any::<prop::sample::Index>(), 1usize..1500), 1..5),
    ) {
        let whole = capture();
        let mut data = whole[..1200].to_vec();
        for (start, len) in &pieces {
            let start = start.index(whole.len());
            data.extend(&whole[start..(start + len).min(whole.len())]);
        }
        check(&data);
    }
}
