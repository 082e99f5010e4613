//! The import graph of `src/`, checked against the table of rooms in
//! `docs/architecture.md`: every `crate::ROOM` a room's code names must be
//! a room the table lets it import, and of a lower layer (so no cycle
//! between rooms can form); every room of `src/` must be in the table and
//! every room of the table in `src/`; and `src/` has at most 15 entries.
//!
//! This reads source text, not the compiler's view: a `crate::` path in
//! code is an edge; comments (doc links included) are not imports and are
//! skipped. `main.rs` and
//! `lib.rs` sit above every room and are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_TOP_LEVEL_ENTRIES: usize = 15;

/// One row of the table: the room's layer and what it may import.
#[derive(Debug)]
struct Room {
    layer: u32,
    may_import: BTreeSet<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads the rooms table of docs/architecture.md. The "may import" cell
/// is `—`, a list of `room`s, or `layers 0–N` (every room of those layers).
fn rooms_from_doc() -> BTreeMap<String, Room> {
    let doc =
        fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let mut layers = BTreeMap::new();
    let mut imports = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `room` | layer | may import | owns |" splits into 6 cells.
        if cells.len() != 6 {
            continue;
        }
        let (Some(name), Ok(layer)) = (
            cells[1].strip_prefix('`').and_then(|c| c.strip_suffix('`')),
            cells[2].parse::<u32>(),
        ) else {
            continue;
        };
        layers.insert(name.to_string(), layer);
        imports.insert(name.to_string(), cells[3].to_string());
    }
    assert!(
        layers.len() >= 5,
        "the rooms table was not found in docs/architecture.md"
    );
    let mut rooms = BTreeMap::new();
    for (name, cell) in &imports {
        let may_import = if let Some(range) = cell.strip_prefix("layers 0–") {
            let top: u32 = range
                .parse()
                .unwrap_or_else(|_| panic!("{name}: bad cell {cell:?}"));
            layers
                .iter()
                .filter(|(_, l)| **l <= top)
                .map(|(n, _)| n.clone())
                .collect()
        } else if cell == "—" {
            BTreeSet::new()
        } else {
            cell.split_whitespace()
                .map(|c| {
                    c.strip_prefix('`')
                        .and_then(|c| c.strip_suffix('`'))
                        .unwrap_or_else(|| panic!("{name}: bad cell {cell:?}"))
                        .to_string()
                })
                .collect()
        };
        let layer = layers[name];
        for dep in &may_import {
            let dep_layer = *layers.get(dep).unwrap_or_else(|| {
                panic!("{name} may import {dep}, which the table does not list")
            });
            assert!(
                dep_layer < layer,
                "the table lets {name} (layer {layer}) import {dep} (layer {dep_layer}): only lower layers may be imported"
            );
        }
        rooms.insert(name.clone(), Room { layer, may_import });
    }
    rooms
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The room a file of src/ belongs to: its first path component, without
/// `.rs` for a top-level file.
fn room_of(src: &Path, file: &Path) -> String {
    let first = file.strip_prefix(src).unwrap().components().next().unwrap();
    let first = first.as_os_str().to_str().unwrap();
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

/// The rooms a line of code names through `crate::`: `crate::x`, and each
/// name of a `crate::{x, y::z}` group.
fn rooms_named(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `$crate::` and `spoolmail_crate::` are not this crate's root path.
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// The code of a line: empty for a comment line, the part before a
/// trailing `//` comment otherwise.
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

/// room → (imported room → the first place that imports it).
fn import_graph(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let room = room_of(src, &file);
        if room == "main" || room == "lib" {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        let edges = graph.entry(room.clone()).or_default();
        for (n, line) in text.lines().enumerate() {
            for dep in rooms_named(code_of(line)) {
                if dep != room {
                    let place =
                        format!("{}:{}", file.strip_prefix(root()).unwrap().display(), n + 1);
                    edges.entry(dep).or_insert(place);
                }
            }
        }
    }
    graph
}

#[test]
fn every_import_goes_down_the_table_of_rooms() {
    let rooms = rooms_from_doc();
    let graph = import_graph(&root().join("src"));
    let mut wrong = Vec::new();
    for (room, edges) in &graph {
        let Some(this) = rooms.get(room) else {
            wrong.push(format!(
                "src/{room} is not in the rooms table of docs/architecture.md"
            ));
            continue;
        };
        for (dep, place) in edges {
            if !this.may_import.contains(dep) {
                let dep_layer = rooms
                    .get(dep)
                    .map_or("?".to_string(), |r| r.layer.to_string());
                wrong.push(format!(
                    "{place}: {room} (layer {}) imports {dep} (layer {dep_layer}), which the table does not allow",
                    this.layer
                ));
            }
        }
    }
    for room in rooms.keys() {
        if !graph.contains_key(room) {
            wrong.push(format!(
                "the rooms table lists {room}, which is not in src/"
            ));
        }
    }
    for (room, edges) in &graph {
        println!(
            "{room} -> {}",
            edges.keys().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    assert!(
        wrong.is_empty(),
        "{} import(s) against docs/architecture.md:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn src_has_at_most_fifteen_entries() {
    let entries: Vec<String> = fs::read_dir(root().join("src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        entries.len() <= MAX_TOP_LEVEL_ENTRIES,
        "src/ has {} entries (at most {MAX_TOP_LEVEL_ENTRIES}): {entries:?}",
        entries.len()
    );
}

/// The scanner itself: a group, a plain path, a comment, `$crate`.
#[test]
fn the_scanner_sees_paths_and_groups_and_skips_comments() {
    assert_eq!(
        rooms_named("use crate::spool::{Draft, QueueId};"),
        ["spool"]
    );
    assert_eq!(
        rooms_named("use crate::{address, accept::message};"),
        ["address", "accept"]
    );
    assert_eq!(
        rooms_named("let x = crate::clock::now(); crate::error::Kind"),
        ["clock", "error"]
    );
    assert!(rooms_named("$crate::spool::x").is_empty());
    assert_eq!(code_of("    /// see [`crate::config`]"), "");
    assert_eq!(rooms_named(code_of("f(crate::a::b); // crate::c")), ["a"]);
}
