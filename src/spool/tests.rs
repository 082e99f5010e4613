//! The spool's rules, one test each, against a fresh temporary spool.

use super::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, UNIX_EPOCH};

/// A spool in a fresh temporary directory (kept alive by the guard).
fn spool() -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    (dir, spool)
}

fn envelope(id: &QueueId) -> Envelope {
    Envelope {
        id: id.clone(),
        arrival: 1_700_000_000,
        sender: "alice@example.org".into(),
        recipients: vec!["bob@example.net".into(), "\"c d\"@example.com".into()],
        uid: 1000,
        user: "alice".into(),
        body_type: Some("8BITMIME".into()),
        dsn_notify: Some("SUCCESS,FAILURE".into()),
        dsn_ret: Some("hdrs".into()),
        envid: None,
        chain: Vec::new(),
        size: 0,
    }
}

/// Commits one message with `data` and returns its envelope as written.
fn enqueue(spool: &Spool, data: &[u8]) -> Envelope {
    let mut draft = spool.begin(SystemTime::now()).unwrap();
    let env = envelope(draft.id());
    draft.write_envelope(&env).unwrap();
    draft.data().write_all(data).unwrap();
    let committed = draft.commit().unwrap();
    assert_eq!(committed.id, env.id);
    assert_eq!(committed.size, data.len() as u64);
    Envelope {
        size: committed.size,
        ..env
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn commit_then_list_round_trips_the_envelope_and_size() {
    let (_dir, spool) = spool();
    let data = b"Subject: hi\r\n\r\n\x00\xff binary\n.END 00000000000000000003\n";
    let env = enqueue(&spool, data);
    let listed = spool.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].envelope, env);
    assert_eq!(listed[0].state, None);
    assert!(!listed[0].claimed);
    assert_eq!(spool.read_envelope(&env.id).unwrap(), env);
    let mut back = Vec::new();
    spool
        .open_data(&env.id)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, data);
    assert!(names(&spool.root().join("tmp")).is_empty());
}

#[test]
fn empty_message_and_null_sender_round_trip() {
    let (_dir, spool) = spool();
    let mut draft = spool.begin(SystemTime::now()).unwrap();
    let mut env = envelope(draft.id());
    env.sender.clear();
    draft.write_envelope(&env).unwrap();
    let committed = draft.commit().unwrap();
    assert_eq!(committed.size, 0);
    assert_eq!(spool.read_envelope(&env.id).unwrap(), env);
}

#[test]
fn list_is_sorted_by_id() {
    let (_dir, spool) = spool();
    let ids: Vec<QueueId> = (0..5).map(|_| enqueue(&spool, b"x").id).collect();
    let listed: Vec<QueueId> = spool
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.envelope.id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
}

#[test]
fn dropped_draft_leaves_tmp_and_queue_empty() {
    let (_dir, spool) = spool();
    {
        let mut draft = spool.begin(SystemTime::now()).unwrap();
        let env = envelope(draft.id());
        draft.write_envelope(&env).unwrap();
        draft.data().write_all(b"half a message").unwrap();
        assert_eq!(names(&spool.root().join("tmp")).len(), 1);
    }
    assert!(names(&spool.root().join("tmp")).is_empty());
    assert!(names(&spool.root().join("queue")).is_empty());
    assert!(spool.list().unwrap().is_empty());
}

#[test]
fn failed_commit_leaves_tmp_and_queue_empty() {
    let (_dir, spool) = spool();
    let draft = spool.begin(SystemTime::now()).unwrap();
    // No envelope: a bug upstream, refused at the commit point.
    let err = draft.commit().unwrap_err();
    assert_eq!(err.kind(), Kind::Software);
    assert!(names(&spool.root().join("tmp")).is_empty());
    assert!(names(&spool.root().join("queue")).is_empty());
}

#[test]
fn line_breaks_in_the_envelope_are_a_bug_upstream() {
    let (_dir, spool) = spool();
    let mut draft = spool.begin(SystemTime::now()).unwrap();
    let mut env = envelope(draft.id());
    env.recipients
        .push("evil@example.org\nrcpt extra@example.org".into());
    assert_eq!(
        draft.write_envelope(&env).unwrap_err().kind(),
        Kind::Software
    );
}

#[test]
fn envelope_for_another_id_is_refused() {
    let (_dir, spool) = spool();
    let mut draft = spool.begin(SystemTime::now()).unwrap();
    let env = envelope(&QueueId::generate(UNIX_EPOCH));
    assert_eq!(
        draft.write_envelope(&env).unwrap_err().kind(),
        Kind::Software
    );
}

#[test]
fn truncated_queue_file_is_moved_to_corrupt_and_not_listed() {
    let (_dir, spool) = spool();
    let good = enqueue(&spool, b"good message\n");
    let bad = enqueue(&spool, b"this one gets truncated\n");
    let path = spool.root().join("queue").join(bad.id.as_str());
    let len = fs::metadata(&path).unwrap().len();
    // Queue files are read-only by convention, not by mode: simulate a
    // torn write by cutting the tail off.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let listed = spool.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].envelope.id, good.id);
    assert_eq!(
        names(&spool.root().join("corrupt")),
        vec![bad.id.to_string()]
    );
    assert!(!path.exists());
}

#[test]
fn size_mismatch_and_foreign_files_are_corrupt() {
    let (_dir, spool) = spool();
    let queue = spool.root().join("queue");
    let appended = enqueue(&spool, b"data\n");
    OpenOptions::new()
        .append(true)
        .open(queue.join(appended.id.as_str()))
        .unwrap()
        .write_all(b"more")
        .unwrap();
    let foreign = QueueId::generate(SystemTime::now());
    fs::write(queue.join(foreign.as_str()), "From root\n\nhello\n").unwrap();
    let linked = QueueId::generate(SystemTime::now());
    std::os::unix::fs::symlink("/etc/passwd", queue.join(linked.as_str())).unwrap();
    let dir = QueueId::generate(SystemTime::now());
    fs::create_dir(queue.join(dir.as_str())).unwrap();
    assert!(spool.list().unwrap().is_empty());
    assert!(names(&queue).is_empty());
    assert_eq!(names(&spool.root().join("corrupt")).len(), 4);
    let err = spool.read_envelope(&appended.id).unwrap_err();
    assert_eq!(err.kind(), Kind::CantCreate, "already moved away: {err}");
}

#[test]
fn read_envelope_of_a_corrupt_file_is_a_data_error() {
    let (_dir, spool) = spool();
    let id = QueueId::generate(SystemTime::now());
    fs::write(
        spool.root().join("queue").join(id.as_str()),
        "SPOOLMAIL-QUEUE 1\n",
    )
    .unwrap();
    assert_eq!(spool.read_envelope(&id).unwrap_err().kind(), Kind::Data);
    assert_eq!(names(&spool.root().join("corrupt")), vec![id.to_string()]);
}

#[test]
fn file_with_a_bad_name_is_skipped() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"x");
    let stray = spool.root().join("queue").join("not-an-id");
    fs::write(&stray, "whatever").unwrap();
    let listed = spool.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].envelope.id, env.id);
    assert!(stray.exists(), "skipped, not moved");
}

#[test]
fn missing_queue_dir_is_an_empty_list() {
    let (_dir, spool) = spool();
    fs::remove_dir(spool.root().join("queue")).unwrap();
    assert!(spool.list().unwrap().is_empty());
}

#[test]
fn missing_directories_are_recreated_on_begin() {
    let (_dir, spool) = spool();
    for sub in SUBDIRS {
        fs::remove_dir_all(spool.root().join(sub)).unwrap();
    }
    enqueue(&spool, b"x");
    assert_eq!(spool.list().unwrap().len(), 1);
    let due = spool
        .due_page(u64::MAX, None, 10, |_| false)
        .unwrap()
        .expect("a schedule");
    assert_eq!(due.keys.len(), 1, "filed as due at its commit");
}

#[test]
fn state_round_trips() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"x");
    assert_eq!(spool.read_state(&env.id).unwrap(), None);
    let mut state = DeliveryState::initial(&env);
    assert_eq!(state.recipients.len(), 2);
    assert!(
        state
            .recipients
            .iter()
            .all(|r| r.status == RecipientStatus::Queued && r.attempts == 0)
    );
    state.recipients[0].status = RecipientStatus::Deferred;
    state.recipients[0].attempts = 1;
    state.recipients[0].last_error = Some("451 4.7.1 greylisted".into());
    state.recipients[0].next_attempt = Some(1_700_000_900);
    state.possibly_delivered = true;
    spool.write_state(&env.id, &state).unwrap();
    assert_eq!(spool.read_state(&env.id).unwrap(), Some(state.clone()));
    assert_eq!(spool.list().unwrap()[0].state, Some(state));
    assert_eq!(names(&spool.root().join("state")), vec![env.id.to_string()]);
}

#[test]
fn an_unreadable_state_never_sets_a_valid_queue_file_aside() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"x");
    let state_file = spool.root().join("state").join(env.id.as_str());
    for bad in [
        &b"{not json"[..],
        b"",
        b"{\"version\": 99, \"recipients\": []}",
    ] {
        fs::write(&state_file, bad).unwrap();
        assert_eq!(spool.read_state(&env.id).unwrap_err().kind(), Kind::Data);
        let listed = spool.list().unwrap();
        assert_eq!(listed.len(), 1, "the message is still listed");
        assert_eq!(listed[0].state, None);
        assert!(listed[0].state_error.is_some());
        assert!(names(&spool.root().join("corrupt")).is_empty());
        assert_eq!(names(&spool.root().join("queue")), vec![env.id.to_string()]);
        assert!(state_file.exists(), "left for the runner to judge");
    }
}

/// Item 7: 25 000 recipients, each deferred with a long 4xx text, made a
/// 17.5 MB state file that the reader refused (and mailq quarantined).
#[test]
fn a_state_with_many_long_errors_reads_back() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"x");
    let mut state = DeliveryState::initial(&env);
    let text = format!(
        "450 4.2.0 {}\r\n",
        "Recipient address rejected: try again later ".repeat(16)
    );
    state.recipients = (0..25_000)
        .map(|n| RecipientState {
            address: format!("user{n}@example.com"),
            status: RecipientStatus::Deferred,
            attempts: 3,
            last_error: Some(text.clone()),
            next_attempt: Some(1_700_000_900),
            last_attempt: Some(1_700_000_000),
            dsn_status: Some("4.2.0".into()),
            relay: Some("mx.example.com[192.0.2.1]:25".into()),
            tls: Some(crate::spool::TlsApplied::Opportunistic),
            notified: false,
            local_done: Vec::new(),
        })
        .collect();
    spool.write_state(&env.id, &state).unwrap();
    let back = spool.read_state(&env.id).unwrap().expect("readable");
    assert_eq!(back.recipients.len(), 25_000);
    assert!(back.recipients[0].last_error.as_ref().unwrap().len() <= state::MAX_ERROR_JSON);
    assert_eq!(spool.list().unwrap()[0].state_error, None);
}

/// The largest state the spool may write — the most recipients it is
/// sized for ([`MAX_STATE_RECIPIENTS`]), the longest addresses, every
/// text at its bound in its most expensive encoding — is under the read
/// limit.
#[test]
fn the_largest_state_written_is_readable() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"x");
    let mut state = DeliveryState::initial(&env);
    let worst = "\u{1}\"".repeat(1000);
    let address = format!("\"{}\"@{}", "\\\"".repeat(30), "d".repeat(190));
    state.recipients = (0..MAX_STATE_RECIPIENTS)
        .map(|_| RecipientState {
            address: address.clone(),
            status: RecipientStatus::Deferred,
            attempts: u32::MAX,
            last_error: Some(worst.clone()),
            next_attempt: Some(u64::MAX),
            last_attempt: Some(u64::MAX),
            dsn_status: Some(worst.clone()),
            relay: Some(worst.clone()),
            tls: Some(crate::spool::TlsApplied::Opportunistic),
            notified: true,
            local_done: vec![format!("mailbox:{}", "u".repeat(32))],
        })
        .collect();
    spool.write_state(&env.id, &state).unwrap();
    let len = fs::metadata(spool.root().join("state").join(env.id.as_str()))
        .unwrap()
        .len();
    assert!(len <= MAX_STATE_BYTES / 2, "{len} bytes: keep a margin");
    assert!(spool.read_state(&env.id).unwrap().is_some());
}

#[test]
fn a_state_too_large_to_read_back_is_not_written() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"x");
    let mut state = DeliveryState::initial(&env);
    spool.write_state(&env.id, &state).unwrap();
    state.recipients[0].local_done = vec!["x".repeat(MAX_STATE_BYTES as usize)];
    let e = spool.write_state(&env.id, &state).unwrap_err();
    assert_eq!(e.kind(), Kind::Software);
    assert_eq!(
        spool.read_state(&env.id).unwrap(),
        Some(DeliveryState::initial(&env)),
        "the previous state stays"
    );
}

#[test]
fn claim_is_exclusive() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"x");
    let claim = spool.claim(&env.id).unwrap().expect("first claim");
    assert_eq!(claim.id(), &env.id);
    // A separate Spool opens the file afresh: a separate flock.
    let other = Spool::open(spool.root()).unwrap();
    assert!(other.claim(&env.id).unwrap().is_none());
    assert!(other.list().unwrap()[0].claimed);
    drop(claim);
    assert!(!other.list().unwrap()[0].claimed);
    assert!(other.claim(&env.id).unwrap().is_some());
}

#[test]
fn claimable_is_refused_by_a_claim_only() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"x");
    let other = Spool::open(spool.root()).unwrap();
    assert!(spool.claimable(&env.id));
    // Another probe's shared lock does not refuse a probe.
    let probe = File::open(spool.root().join("queue").join(env.id.as_str())).unwrap();
    probe.lock_shared().unwrap();
    assert!(other.claimable(&env.id));
    drop(probe);
    let claim = spool.claim(&env.id).unwrap().expect("claimed");
    assert!(!other.claimable(&env.id));
    spool.remove(claim).unwrap();
    assert!(!other.claimable(&env.id), "gone");
}

#[test]
fn a_claim_held_before_the_commit_is_the_claim_after_it() {
    let (_dir, spool) = spool();
    let mut draft = spool.begin(SystemTime::now()).unwrap();
    let env = envelope(draft.id());
    let held = draft.hold_claim().unwrap();
    draft.write_envelope(&env).unwrap();
    draft.data().write_all(b"held from the start").unwrap();
    draft.commit().unwrap();
    // Queued, and nobody else can claim it: not a runner listing the
    // queue between the commit and the caller's own delivery.
    let other = Spool::open(spool.root()).unwrap();
    assert!(other.claim(&env.id).unwrap().is_none());
    assert!(other.list().unwrap()[0].claimed);
    let (claim, read) = spool.claim_held(held).unwrap().expect("the held claim");
    assert_eq!(read.recipients, env.recipients);
    let mut data = Vec::new();
    spool
        .claimed_data(&claim)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(data, b"held from the start");
    assert!(other.claim(&env.id).unwrap().is_none());
    drop(claim);
    assert!(other.claim(&env.id).unwrap().is_some());
}

#[test]
fn a_claim_held_on_a_draft_never_committed_claims_nothing() {
    let (_dir, spool) = spool();
    let mut draft = spool.begin(SystemTime::now()).unwrap();
    let env = envelope(draft.id());
    let held = draft.hold_claim().unwrap();
    draft.write_envelope(&env).unwrap();
    drop(draft);
    assert!(spool.claim_held(held).unwrap().is_none());
    assert!(spool.queued_ids().unwrap().is_empty());
}

#[test]
fn remove_deletes_queue_and_state_files() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"x");
    spool
        .write_state(&env.id, &DeliveryState::initial(&env))
        .unwrap();
    let claim = spool.claim(&env.id).unwrap().unwrap();
    spool.remove(claim).unwrap();
    assert!(spool.list().unwrap().is_empty());
    assert!(names(&spool.root().join("queue")).is_empty());
    assert!(names(&spool.root().join("state")).is_empty());
    assert!(spool.claim(&env.id).unwrap().is_none());
}

#[test]
fn queue_files_are_0640_and_dirs_not_world_accessible() {
    let (_dir, spool) = spool();
    // A hostile caller's umask must not matter: the modes are set exactly.
    let env = enqueue(&spool, b"x");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(&spool.root().join("queue").join(env.id.as_str())),
        0o640
    );
    spool
        .write_state(&env.id, &DeliveryState::initial(&env))
        .unwrap();
    assert_eq!(
        mode(&spool.root().join("state").join(env.id.as_str())),
        0o640
    );
    assert_eq!(mode(spool.root()), ROOT_MODE);
    for sub in SUBDIRS {
        assert_eq!(mode(&spool.root().join(sub)), DIR_MODE, "{sub}");
    }
}

#[test]
fn message_data_reads_exactly_the_data() {
    let (_dir, spool) = spool();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let env = enqueue(&spool, &big);
    let mut data = spool.open_data(&env.id).unwrap();
    assert_eq!(data.remaining(), big.len() as u64);
    let mut back = Vec::new();
    data.read_to_end(&mut back).unwrap();
    assert!(back == big);
}

#[test]
fn ids_sort_by_arrival_time() {
    let (_dir, spool) = spool();
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let later = spool.begin(t + Duration::from_secs(1)).unwrap();
    let earlier = spool.begin(t).unwrap();
    assert!(earlier.id() < later.id());
}

#[test]
fn sweep_removes_only_old_tmp_files_and_never_queued_messages() {
    let (_dir, spool) = spool();
    let queued = enqueue(&spool, b"kept\n");
    let old = spool.root().join("tmp/OLDDRAFT");
    let young = spool.root().join("tmp/YOUNGDRAFT");
    fs::write(&old, b"half a message").unwrap();
    fs::write(&young, b"being written").unwrap();
    let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);
    File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let swept = spool
        .sweep_tmp(Duration::from_secs(36 * 3600), SystemTime::now())
        .unwrap();
    assert_eq!(swept, 1);
    assert!(!old.exists());
    assert!(young.exists());
    assert_eq!(spool.queued_ids().unwrap(), vec![queued.id]);
}

/// Issue 11, defect 7: state/ is swept too — an interrupted state write,
/// and the state of a message whose removal was cut short — never the
/// state of a queued message, never a young file.
#[test]
fn sweep_removes_stray_state_files_only() {
    let (_dir, spool) = spool();
    let queued = enqueue(&spool, b"kept\n");
    let env = spool.read_envelope(&queued.id).unwrap();
    spool
        .write_state(&queued.id, &DeliveryState::initial(&env))
        .unwrap();
    let gone = QueueId::generate(SystemTime::now());
    let state_dir = spool.root().join("state");
    let orphan = state_dir.join(gone.as_str());
    let unfinished = state_dir.join(format!("{}.tmp-4242", queued.id));
    let young_unfinished = state_dir.join(format!("{gone}.tmp-4243"));
    for path in [&orphan, &unfinished, &young_unfinished] {
        fs::write(path, b"{}").unwrap();
    }
    let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);
    for path in [&orphan, &unfinished, &state_dir.join(queued.id.as_str())] {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    let swept = spool
        .sweep_tmp(Duration::from_secs(36 * 3600), SystemTime::now())
        .unwrap();
    assert_eq!(swept, 2);
    assert!(!orphan.exists() && !unfinished.exists());
    assert!(young_unfinished.exists());
    assert!(spool.read_state(&queued.id).unwrap().is_some());
}

#[test]
fn claim_message_reads_envelope_and_data_through_the_claim() {
    let (_dir, spool) = spool();
    let env = enqueue(&spool, b"Subject: s\n\nbody\n");
    let (claim, read) = spool.claim_message(&env.id).unwrap().expect("claimed");
    assert_eq!(read, env);
    for _ in 0..2 {
        let mut data = Vec::new();
        spool
            .claimed_data(&claim)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(
            data, b"Subject: s\n\nbody\n",
            "each reader starts at the data"
        );
    }
    assert!(spool.claim_message(&env.id).unwrap().is_none(), "held");
}

/// Item 11: corrupt/ is emptied after corrupt_max_age and held under its
/// caps, refused drops going before queue files.
#[test]
fn sweep_corrupt_bounds_age_bytes_and_files() {
    let (_dir, spool) = spool();
    let corrupt = spool.root().join("corrupt");
    fs::write(corrupt.join("01.drop"), vec![b'x'; 1000]).unwrap();
    fs::write(corrupt.join("02"), vec![b'x'; 100]).unwrap();
    fs::write(corrupt.join("03.state"), vec![b'x'; 10]).unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(86400);
    assert_eq!(spool.sweep_corrupt(30 * day, 0, 100, now).unwrap(), 0);
    // Over the byte cap: the drop goes first.
    assert_eq!(spool.sweep_corrupt(30 * day, 500, 100, now).unwrap(), 1);
    assert_eq!(names(&corrupt), vec!["02", "03.state"]);
    // Over the file cap.
    assert_eq!(spool.sweep_corrupt(30 * day, 0, 1, now).unwrap(), 1);
    assert_eq!(names(&corrupt).len(), 1);
    // Too old.
    assert_eq!(
        spool
            .sweep_corrupt(30 * day, 0, 100, now + 31 * day)
            .unwrap(),
        1
    );
    assert!(names(&corrupt).is_empty());
}

#[test]
fn sweep_corrupt_removes_the_drops_of_whoever_has_most_first() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: giving files other owners needs root");
        return;
    }
    let (_dir, spool) = spool();
    let corrupt = spool.root().join("corrupt");
    let now = SystemTime::now();
    let day = Duration::from_secs(86400);
    // An older drop of one user, then a flood of another's.
    let victim = corrupt.join("00.drop");
    fs::write(&victim, b"x").unwrap();
    std::os::unix::fs::chown(&victim, Some(1001), None).unwrap();
    // Age is read in whole seconds of ctime (which no call can set): the
    // victim's drop must be the oldest for the old rule to remove it.
    let older = fs::metadata(&victim).unwrap().ctime();
    while crate::clock::unix_now() as i64 <= older {
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in 1..=5 {
        let path = corrupt.join(format!("{n:02}.drop"));
        fs::write(&path, b"x").unwrap();
        std::os::unix::fs::chown(&path, Some(1002), None).unwrap();
    }
    assert_eq!(spool.sweep_corrupt(30 * day, 0, 3, now).unwrap(), 3);
    let left = names(&corrupt);
    assert_eq!(left.len(), 3);
    assert!(left.contains(&"00.drop".to_string()), "{left:?}");
}

/// A runner killed inside the RFC 1047 window leaves `window/ID`: the
/// next claim sees it; once the message is removed (the kill came
/// between its removal and the window's) the link is swept.
#[test]
fn a_window_left_open_is_seen_by_the_next_claim_and_swept_once_removed() {
    let (_dir, spool) = spool();
    let id = enqueue(&spool, b"Subject: w\n\nbody\n").id;
    let claim = spool.claim(&id).unwrap().unwrap();
    assert_eq!(claim.window_left_open(), None);
    spool.open_window(&claim).unwrap();
    spool.open_window(&claim).unwrap();
    drop(claim);
    let claim = spool.claim(&id).unwrap().unwrap();
    assert!(claim.window_left_open().is_some());
    assert!(spool.list().unwrap()[0].window_open);
    assert_eq!(
        spool.sweep_windows(),
        0,
        "the window of a queued message stays"
    );
    drop(claim);
    fs::remove_file(spool.root().join("queue").join(id.as_str())).unwrap();
    assert_eq!(spool.sweep_windows(), 1);
    assert!(names(&spool.root().join(WINDOW)).is_empty());
}

/// A removal closes the window after the queue file is durably gone.
#[test]
fn removing_a_message_closes_its_window() {
    let (_dir, spool) = spool();
    let id = enqueue(&spool, b"Subject: w\n\nbody\n").id;
    let claim = spool.claim(&id).unwrap().unwrap();
    spool.open_window(&claim).unwrap();
    spool.remove(claim).unwrap();
    assert!(names(&spool.root().join(WINDOW)).is_empty());
    let grouped = spool.with_group_sync();
    let id = enqueue(&spool, b"Subject: w\n\nbody\n").id;
    let claim = grouped.claim(&id).unwrap().unwrap();
    grouped.open_window(&claim).unwrap();
    grouped.remove(claim).unwrap();
    drop(grouped);
    assert!(names(&spool.root().join(WINDOW)).is_empty());
}
