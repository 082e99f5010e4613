//! The aliases file and `.forward`/`:include:` lists: aliases::parse and
//! aliases::parse_list on any UTF-8 text.
//!
//! Asserts: an error list is never empty and every error names the origin
//! and a line; a parsed file counts its entries; every address target is
//! a valid address printed in canonical form (it parses back to itself),
//! a `\user` target is an unqualified one; the compiled form (JSON) reads
//! back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolmail::address::Address;
use spoolmail::local::aliases::{self, Aliases, Target};

fn check_target(t: &Target) {
    match t {
        Target::Address(a) => {
            let parsed = Address::parse(a).expect("address target parses");
            assert_eq!(&parsed.to_string(), a);
        }
        Target::Local(u) => {
            let parsed = Address::parse(u).expect("local target parses");
            assert!(!parsed.is_qualified());
            assert_eq!(&parsed.to_string(), u);
        }
        Target::Pipe(c) => assert!(!c.is_empty() && !c.chars().any(char::is_control)),
        Target::File(p) => assert!(p.is_absolute()),
        Target::Include(p) => assert!(p.is_absolute()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match aliases::parse(text, "fuzz") {
        Ok((parsed, summary)) => {
            assert_eq!(summary.count, parsed.entries.len());
            assert!(summary.longest <= summary.total);
            for (name, targets) in &parsed.entries {
                assert!(!name.is_empty());
                assert_eq!(name, &name.to_ascii_lowercase());
                targets.iter().for_each(check_target);
            }
            let json = serde_json::to_vec(&parsed).unwrap();
            let back: Aliases = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, parsed);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(e.starts_with("fuzz:"), "{e:?}");
            }
        }
    }
    let (targets, errors) = aliases::parse_list(text, "fuzz");
    targets.iter().for_each(check_target);
    for e in &errors {
        assert!(e.starts_with("fuzz:"), "{e:?}");
    }
});
