//! Integration tests of the SQLite job journal: durability, idempotency, paging, recovery
//! order, purge and state-change checks.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use coordinator::job::{
    Failure, FailureClass, JobId, JobState, NodeError, OutputRef, StateChange, UiValues,
    WorkflowAnalysis,
};
use coordinator::journal::{JobStore, JournalError, ListQuery, SqliteOptions, SqliteStore};
use support::{at, job_for_test, workflow_bytes};
use uuid::Uuid;

fn open_for_test(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open_in_dir(dir.path(), SqliteOptions::default()).expect("journal opens")
}

#[tokio::test]
async fn jobs_and_their_changes_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_for_test(&dir);

    // A real workflow whose seed exceeds 2^53 must come back byte for byte.
    let mut job = job_for_test("team-a", 5, 1);
    job.spec.workflow = workflow_bytes("sdxl-minimal-seed-u64max-DERIVED.json").into();
    job.spec.idempotency_key = Some("key-1".into());
    job.spec.required_labels.insert("gpu".into(), "a100".into());
    job.spec.deadline = Some(at(3600));
    job.spec.analysis = WorkflowAnalysis {
        required_classes: std::sync::Arc::new(BTreeSet::from([
            "KSampler".to_owned(),
            "SaveImage".to_owned(),
        ])),
        models: [(
            "checkpoints".to_owned(),
            BTreeSet::from(["sdxl.safetensors".to_owned()]),
        )]
        .into(),
        cost: 12.5,
        activation_bytes: 8 << 20,
    };
    let inserted = store.insert(job.clone()).await.expect("insert");
    assert!(inserted.created);
    assert_eq!(inserted.job, job);

    let prompt_id = Uuid::new_v4();
    let dispatch = StateChange::Dispatch {
        node: "gpu-1".into(),
        prompt_id,
    };
    store
        .record(job.id, dispatch, at(2))
        .await
        .expect("dispatch");
    store
        .record(
            job.id,
            StateChange::Requeue {
                reason: "node gpu-1: lost".into(),
                class: Some(FailureClass::NodeLost),
            },
            at(3),
        )
        .await
        .expect("requeue");
    let second = StateChange::Dispatch {
        node: "gpu-2".into(),
        prompt_id: Uuid::new_v4(),
    };
    store
        .record(job.id, second, at(4))
        .await
        .expect("dispatch again");
    store
        .record(job.id, StateChange::Start, at(5))
        .await
        .expect("start");
    let outputs = vec![OutputRef {
        node_id: "9".into(),
        filename: "out_00001_.png".into(),
        subfolder: "sub".into(),
        folder_type: "output".into(),
        kind: "images".into(),
        held_by: "gpu-2".into(),
    }];
    // What a text-display node and an animated save showed besides their files.
    let ui_values: UiValues = serde_json::from_value(serde_json::json!({
        "12": {"text": ["a cat, 1024x1024"]},
        "9": {"animated": [false], "custom": {"kept": [1, 2.5, null]}}
    }))
    .expect("ui values");
    let finished = store
        .record(
            job.id,
            StateChange::Succeed {
                outputs: outputs.clone(),
                ui_values: ui_values.clone(),
            },
            at(6),
        )
        .await
        .expect("succeed");

    // A failed job with a node error, too.
    let other = job_for_test("team-b", 0, 7);
    store.insert(other.clone()).await.expect("insert");
    store
        .record(
            other.id,
            StateChange::Dispatch {
                node: "gpu-3".into(),
                prompt_id,
            },
            at(8),
        )
        .await
        .expect("dispatch");
    let mut failure = Failure::new(FailureClass::JobFault, "node 2: padding too large");
    failure.node_error = Some(NodeError {
        node_id: "2".into(),
        class_type: "ImageBlur".into(),
        exception_type: "RuntimeError".into(),
        exception_message: "Padding size should be less\n".into(),
        traceback: vec!["  File \"execution.py\", line 496\n".into()],
    });
    failure.details = Some(serde_json::json!({"node_errors": {}}));
    let failed = store
        .record(other.id, StateChange::Fail { failure }, at(9))
        .await
        .expect("fail");

    drop(store);
    let reopened = open_for_test(&dir);
    let back = reopened.get(job.id).await.expect("get").expect("stored");
    // A change other than a dispatch answers without the workflow; `get` reads it.
    assert!(finished.spec.workflow.is_empty());
    let mut finished_whole = finished.clone();
    finished_whole.spec.workflow = job.spec.workflow.clone();
    finished_whole.spec.extras = job.spec.extras.clone();
    assert_eq!(
        back, finished_whole,
        "the finished job reads back exactly as recorded"
    );
    assert_eq!(
        back.spec.workflow, job.spec.workflow,
        "workflow bytes unchanged"
    );
    assert_eq!(back.progress.attempts.len(), 1);
    assert_eq!(back.progress.attempt, 2);
    assert_eq!(back.progress.outputs, outputs);
    assert_eq!(back.progress.ui_values, ui_values);
    let back = reopened.get(other.id).await.expect("get").expect("stored");
    let mut failed_whole = failed;
    failed_whole.spec.workflow = other.spec.workflow.clone();
    failed_whole.spec.extras = other.spec.extras.clone();
    assert_eq!(
        back, failed_whole,
        "the failed job reads back with its node error"
    );
    assert_eq!(reopened.get(JobId::new()).await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_with_one_key_create_one_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(open_for_test(&dir));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut job = job_for_test("team-a", 0, 0);
                job.created_at = at(i);
                job.spec.idempotency_key = Some("same-key".into());
                store.insert(job).await.expect("insert")
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut num_created = 0;
    for task in tasks {
        let inserted = task.await.expect("task");
        ids.insert(inserted.job.id);
        num_created += usize::from(inserted.created);
    }
    assert_eq!(num_created, 1, "exactly one submission creates the job");
    assert_eq!(ids.len(), 1, "every submission gets the same job back");
    let counts = store.count_by_state().await.expect("counts");
    assert_eq!(counts[&JobState::Queued], 1);

    // The key is scoped by tenant.
    let mut other = job_for_test("team-b", 0, 0);
    other.spec.idempotency_key = Some("same-key".into());
    assert!(
        store.insert(other).await.expect("insert").created,
        "another tenant's key is separate"
    );

    // A different workflow under a used key is refused.
    let mut conflicting = job_for_test("team-a", 0, 99);
    conflicting.spec.idempotency_key = Some("same-key".into());
    let err = store.insert(conflicting).await.expect_err("conflict");
    assert!(
        matches!(err, JournalError::IdempotencyConflict { ref tenant, .. } if tenant == "team-a")
    );
}

#[tokio::test]
async fn paging_returns_every_matching_job_once_newest_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_for_test(&dir);
    let mut expected_all = Vec::new();
    for i in 0..157u64 {
        let tenant = if i % 3 == 0 { "team-a" } else { "team-b" };
        let job = job_for_test(tenant, 0, i);
        store.insert(job.clone()).await.expect("insert");
        let state = if i % 5 == 0 {
            let cancel = StateChange::Cancel {
                reason: "caller".into(),
            };
            store.record(job.id, cancel, at(i)).await.expect("cancel");
            JobState::Cancelled
        } else {
            JobState::Queued
        };
        expected_all.push((job.id, tenant, state));
    }
    expected_all.reverse(); // newest first

    let cases: Vec<(Option<&str>, Vec<JobState>)> = vec![
        (None, vec![]),
        (Some("team-a"), vec![]),
        (None, vec![JobState::Cancelled]),
        (Some("team-b"), vec![JobState::Queued, JobState::Running]),
        (Some("nobody"), vec![]),
    ];
    for (tenant, states) in cases {
        let expected: Vec<JobId> = expected_all
            .iter()
            .filter(|(_, t, _)| tenant.is_none_or(|want| want == *t))
            .filter(|(_, _, s)| states.is_empty() || states.contains(s))
            .map(|(id, _, _)| *id)
            .collect();
        for page_size in [1, 7, 50, 1000] {
            let mut seen = Vec::new();
            let mut token = None;
            loop {
                let query = ListQuery {
                    states: states.clone(),
                    tenant: tenant.map(str::to_owned),
                    page_size,
                    page_token: token.take(),
                    with_workflow: false,
                };
                let page = store.list(query).await.expect("list");
                assert!(
                    page.jobs.len() <= page_size as usize,
                    "page within its size"
                );
                assert!(page.jobs.iter().all(|j| j.spec.workflow.is_empty()));
                seen.extend(page.jobs.iter().map(|j| j.id));
                match page.next_page_token {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
            assert_eq!(
                seen, expected,
                "tenant {tenant:?} states {states:?} size {page_size}"
            );
        }
    }

    let bad = ListQuery {
        page_token: Some("garbage".into()),
        ..ListQuery::default()
    };
    assert!(matches!(
        store.list(bad).await,
        Err(JournalError::BadPageToken(_))
    ));
    // A token is good only for the listing that issued it.
    let first = |tenant: Option<&str>, states: Vec<JobState>| ListQuery {
        states,
        tenant: tenant.map(str::to_owned),
        page_size: 1,
        ..ListQuery::default()
    };
    let token = store
        .list(first(
            Some("team-a"),
            vec![JobState::Queued, JobState::Running],
        ))
        .await
        .expect("list")
        .next_page_token
        .expect("more than one page");
    let next = |tenant: Option<&str>, states: Vec<JobState>| ListQuery {
        page_token: Some(token.clone()),
        ..first(tenant, states)
    };
    // The same filters in another order are the same listing.
    let same = next(Some("team-a"), vec![JobState::Running, JobState::Queued]);
    store
        .list(same)
        .await
        .expect("the same listing's next page");
    for other in [
        next(Some("team-b"), vec![JobState::Queued, JobState::Running]),
        next(None, vec![JobState::Queued, JobState::Running]),
        next(Some("team-a"), vec![JobState::Queued]),
        next(Some("team-a"), vec![]),
    ] {
        assert!(
            matches!(
                store.list(other.clone()).await,
                Err(JournalError::BadPageToken(_))
            ),
            "{other:?}"
        );
    }
    let with_workflow = ListQuery {
        page_size: 1,
        with_workflow: true,
        ..ListQuery::default()
    };
    let page = store.list(with_workflow).await.expect("list");
    assert!(
        !page.jobs[0].spec.workflow.is_empty(),
        "workflow loaded when asked"
    );
}

#[tokio::test]
async fn unfinished_jobs_load_in_queue_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_for_test(&dir);
    // (priority, arrival, finished?)
    let plan = [
        (0, 1, false),
        (5, 2, false),
        (0, 3, true),
        (5, 4, false),
        (-1, 5, false),
        (9, 6, true),
        (0, 7, false),
    ];
    let mut jobs = Vec::new();
    for (priority, secs, finish) in plan {
        let job = job_for_test("team-a", priority, secs);
        store.insert(job.clone()).await.expect("insert");
        let dispatch = StateChange::Dispatch {
            node: "gpu-1".into(),
            prompt_id: Uuid::new_v4(),
        };
        store
            .record(job.id, dispatch, at(secs))
            .await
            .expect("dispatch");
        if finish {
            store
                .record(
                    job.id,
                    StateChange::Succeed {
                        outputs: vec![],
                        ui_values: UiValues::new(),
                    },
                    at(secs),
                )
                .await
                .expect("succeed");
        }
        jobs.push((priority, secs, finish, job.id));
    }
    // One still queued: it comes back without its workflow, read again at its dispatch.
    let queued = job_for_test("team-a", 0, 8);
    assert!(!queued.spec.workflow.is_empty());
    store.insert(queued.clone()).await.expect("insert");
    jobs.push((0, 8, false, queued.id));
    let mut expected: Vec<_> = jobs.iter().filter(|j| !j.2).collect();
    expected.sort_by_key(|(priority, secs, _, _)| (-priority, *secs));
    let expected: Vec<JobId> = expected.iter().map(|j| j.3).collect();

    drop(store);
    let store = open_for_test(&dir);
    let loaded = store.load_unfinished().await.expect("load");
    let ids: Vec<JobId> = loaded.iter().map(|j| j.id).collect();
    assert_eq!(ids, expected, "priority descending, then arrival ascending");
    for job in &loaded {
        if job.id == queued.id {
            assert_eq!(job.state(), JobState::Queued);
            assert!(job.spec.workflow.is_empty() && job.spec.extras.is_none());
            assert_eq!(
                job.spec.analysis, queued.spec.analysis,
                "its analysis is kept"
            );
        } else {
            assert_eq!(job.state(), JobState::Dispatched);
            assert!(!job.spec.workflow.is_empty(), "a job on a node comes whole");
        }
    }
    let whole = store.get(queued.id).await.expect("get").expect("stored");
    assert_eq!(whole.spec.workflow, queued.spec.workflow, "still stored");
}

#[tokio::test]
async fn purge_removes_only_old_finished_jobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_for_test(&dir);
    let old_finished = job_for_test("t", 0, 1);
    let new_finished = job_for_test("t", 0, 2);
    let old_queued = job_for_test("t", 0, 3);
    for job in [&old_finished, &new_finished, &old_queued] {
        store.insert(job.clone()).await.expect("insert");
    }
    let cancel = || StateChange::Cancel {
        reason: "caller".into(),
    };
    store
        .record(old_finished.id, cancel(), at(10))
        .await
        .expect("cancel");
    store
        .record(new_finished.id, cancel(), at(100))
        .await
        .expect("cancel");

    assert_eq!(store.purge_finished(at(50)).await.expect("purge"), 1);
    assert!(
        store.get(old_finished.id).await.expect("get").is_none(),
        "old finished job purged"
    );
    assert!(
        store.get(new_finished.id).await.expect("get").is_some(),
        "recent one kept"
    );
    assert!(
        store.get(old_queued.id).await.expect("get").is_some(),
        "unfinished never purged"
    );
    let counts = store.count_by_state().await.expect("counts");
    assert_eq!(
        (counts[&JobState::Queued], counts[&JobState::Cancelled]),
        (1, 1)
    );
    assert_eq!(counts[&JobState::Running], 0, "every state is present");
}

#[tokio::test]
async fn illegal_changes_are_refused_and_leave_the_job_unchanged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_for_test(&dir);
    let job = job_for_test("t", 0, 1);
    store.insert(job.clone()).await.expect("insert");
    let err = store
        .record(job.id, StateChange::Start, at(2))
        .await
        .expect_err("not dispatched");
    assert!(matches!(err, JournalError::Transition(_)), "got {err}");
    assert_eq!(store.get(job.id).await.expect("get"), Some(job.clone()));

    let missing = JobId::new();
    let err = store
        .record(missing, StateChange::Start, at(2))
        .await
        .expect_err("unknown job");
    assert!(matches!(err, JournalError::NotFound(id) if id == missing));

    let dispatched = job
        .apply(StateChange::Cancel { reason: "x".into() }, at(2))
        .expect("legal");
    let err = store
        .insert(dispatched)
        .await
        .expect_err("only queued jobs are inserted");
    assert!(matches!(err, JournalError::NotQueued(_)));
}

#[tokio::test]
async fn a_journal_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.sqlite3");
    drop(SqliteStore::open(&path, SqliteOptions::default()).expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("open raw");
    conn.pragma_update(None, "user_version", 99)
        .expect("set version");
    drop(conn);
    let err = SqliteStore::open(&path, SqliteOptions::default()).expect_err("too new");
    assert!(
        matches!(err, JournalError::SchemaTooNew { found: 99, .. }),
        "got {err}"
    );
}

#[tokio::test]
async fn every_open_is_a_new_run_and_a_first_version_journal_keeps_its_jobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.sqlite3");
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("create");
    assert_eq!(store.run(), 1);
    let job = job_for_test("team-a", 0, 1);
    store.insert(job.clone()).await.expect("insert");
    drop(store);
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("reopen");
    assert_eq!(store.run(), 2);
    drop(store);

    // Back to the first schema version, as a journal written before the run counter: the
    // upgrade keeps the job and counts from 1 again, which is above anything that version
    // numbered (it numbered every job's events from 1, below 2^32).
    let conn = rusqlite::Connection::open(&path).expect("open raw");
    conn.execute_batch(
        "DROP TABLE meta; ALTER TABLE jobs DROP COLUMN extras; DROP TABLE drained_nodes; \
         PRAGMA user_version = 1;",
    )
    .expect("downgrade");
    drop(conn);
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("upgrade");
    assert_eq!(store.run(), 1);
    assert_eq!(store.get(job.id).await.expect("get"), Some(job));
}

#[tokio::test]
async fn prompt_extras_come_back_with_the_job_and_stay_out_of_listings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_for_test(&dir);
    let mut job = job_for_test("team-a", 0, 1);
    let mut extras = coordinator::job::PromptExtras::default();
    extras.extra_data.insert(
        "extra_pnginfo".into(),
        serde_json::json!({"workflow": {"nodes": [1, 2]}}),
    );
    extras.partial_execution_targets = Some(vec!["9".into()]);
    job.spec.extras = Some(Arc::new(extras));
    let plain = job_for_test("team-a", 0, 2);
    store.insert(job.clone()).await.expect("insert");
    store.insert(plain.clone()).await.expect("insert");
    let dispatched = store
        .record(
            job.id,
            StateChange::Dispatch {
                node: "gpu-1".into(),
                prompt_id: Uuid::new_v4(),
            },
            at(2),
        )
        .await
        .expect("dispatch");
    assert_eq!(
        dispatched.spec.extras, job.spec.extras,
        "a dispatch reads them back to forward them"
    );
    drop(store);
    let store = open_for_test(&dir);
    assert_eq!(
        store
            .get(job.id)
            .await
            .expect("get")
            .expect("stored")
            .spec
            .extras,
        job.spec.extras
    );
    assert_eq!(
        store
            .get(plain.id)
            .await
            .expect("get")
            .expect("stored")
            .spec
            .extras,
        None
    );
    let page = store.list(ListQuery::default()).await.expect("list");
    assert!(page.jobs.iter().all(|listed| listed.spec.extras.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_on_the_same_data_dir_is_refused_until_the_first_stops() {
    use coordinator::config::Config;
    use coordinator::{Coordinator, StartError};

    let data = tempfile::tempdir().expect("temp dir");
    let config = || Config {
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data.path().to_path_buf(),
        ..Config::default()
    };
    // A link planted where the pid goes is replaced, never written through.
    let precious = data.path().join("precious.txt");
    std::fs::write(&precious, "keep me").expect("write");
    std::os::unix::fs::symlink(&precious, data.path().join("coordinator.pid")).expect("link");
    let first = Coordinator::start(config(), Default::default())
        .await
        .expect("the first coordinator starts");
    assert_eq!(std::fs::read_to_string(&precious).expect("read"), "keep me");
    // Removing every file the coordinator keeps beside the journal does not free the folder.
    std::fs::remove_file(data.path().join("coordinator.pid")).expect("remove pid");
    let refused = Coordinator::start(config(), Default::default()).await;
    assert!(
        matches!(refused, Err(StartError::DataDirInUse { .. })),
        "still locked without the pid file"
    );
    std::fs::write(
        data.path().join("coordinator.pid"),
        format!("{}\n", std::process::id()),
    )
    .expect("pid back");
    let refused = Coordinator::start(config(), Default::default()).await;
    let Err(error @ StartError::DataDirInUse { .. }) = refused else {
        panic!("a second writer of one journal must be refused");
    };
    let message = error.to_string();
    assert!(
        message.contains(&data.path().display().to_string())
            && message.contains(&format!("pid {}", std::process::id())),
        "names the directory and the holder: {message}"
    );
    first.shutdown().await;
    let again = Coordinator::start(config(), Default::default())
        .await
        .expect("the directory is free once the first one stopped");
    again.shutdown().await;

    // A data_dir that is a file says so.
    let file = data.path().join("precious.txt");
    let not_dir = Coordinator::start(
        Config {
            data_dir: file,
            ..config()
        },
        Default::default(),
    )
    .await;
    let Err(error) = not_dir else {
        panic!("a file is not a data directory")
    };
    assert!(error.to_string().contains("not a directory"), "{error}");
}
