//! Tests of the job state machine.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::*;

fn queued_job_for_test() -> Job {
    Job::new(JobSpec::new(&b"{}"[..], "team-a"), SystemTime::UNIX_EPOCH)
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn dispatch(node: &str) -> StateChange {
    StateChange::Dispatch {
        node: node.to_owned(),
        prompt_id: Uuid::new_v4(),
    }
}

fn change_to(state: JobState) -> StateChange {
    match state {
        JobState::Queued => StateChange::Requeue {
            reason: "node lost".into(),
            class: Some(FailureClass::NodeLost),
        },
        JobState::Dispatched => dispatch("gpu-1"),
        JobState::Running => StateChange::Start,
        JobState::Succeeded => StateChange::Succeed {
            outputs: vec![],
            ui_values: UiValues::new(),
        },
        JobState::Failed => StateChange::Fail {
            failure: Failure::new(FailureClass::JobFault, "node 2: boom"),
        },
        JobState::Cancelled => StateChange::Cancel {
            reason: "caller".into(),
        },
    }
}

/// Drives a fresh job into `state` through legal changes.
fn job_in_state(state: JobState) -> Job {
    let job = queued_job_for_test();
    let path: &[JobState] = match state {
        JobState::Queued => &[],
        JobState::Dispatched => &[JobState::Dispatched],
        JobState::Running => &[JobState::Dispatched, JobState::Running],
        terminal => &[JobState::Dispatched, JobState::Running, terminal],
    };
    path.iter().fold(job, |job, s| {
        job.apply(change_to(*s), at(1)).expect("legal path")
    })
}

#[test]
fn happy_path_records_node_prompt_attempt_and_outputs() {
    let job = queued_job_for_test();
    let prompt_id = Uuid::new_v4();
    let job = job
        .apply(
            StateChange::Dispatch {
                node: "gpu-1".into(),
                prompt_id,
            },
            at(1),
        )
        .expect("queued -> dispatched");
    assert_eq!(job.state(), JobState::Dispatched);
    assert_eq!(job.progress.node.as_deref(), Some("gpu-1"));
    assert_eq!(job.progress.prompt_id, Some(prompt_id));
    assert_eq!(job.progress.attempt, 1, "first dispatch is attempt 1");

    let job = job
        .apply(StateChange::Start, at(2))
        .expect("dispatched -> running");
    assert_eq!(job.progress.started_at, Some(at(2)));

    let output = OutputRef {
        node_id: "3".into(),
        filename: "a_00001_.png".into(),
        subfolder: String::new(),
        folder_type: "output".into(),
        kind: "images".into(),
        held_by: "gpu-1".into(),
    };
    let job = job
        .apply(
            StateChange::Succeed {
                outputs: vec![output.clone()],
                ui_values: UiValues::from([(
                    "7".to_owned(),
                    serde_json::json!({"text": ["1024x1024"]})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                )]),
            },
            at(3),
        )
        .expect("running -> succeeded");
    assert!(job.state().is_terminal());
    assert_eq!(job.progress.outputs, vec![output]);
    assert_eq!(job.progress.ui_values["7"]["text"][0], "1024x1024");
    assert_eq!(job.progress.finished_at, Some(at(3)));
    assert_eq!(
        job.progress.node.as_deref(),
        Some("gpu-1"),
        "finishing node is kept"
    );
}

#[test]
fn requeue_keeps_attempt_history_and_counts_attempts() {
    let job = job_in_state(JobState::Running);
    let first_prompt = job
        .progress
        .prompt_id
        .expect("dispatched job has a prompt id");
    let job = job
        .apply(
            StateChange::Requeue {
                reason: "node gpu-1: lost".into(),
                class: Some(FailureClass::NodeLost),
            },
            at(5),
        )
        .expect("running -> queued");
    assert_eq!(job.state(), JobState::Queued);
    assert_eq!(job.progress.node, None, "a queued job is on no node");
    assert_eq!(job.progress.attempts.len(), 1);
    assert_eq!(job.progress.attempts[0].prompt_id, first_prompt);
    assert_eq!(
        job.progress.attempts[0].class,
        Some(FailureClass::NodeLost),
        "the attempt keeps its failure class"
    );
    assert_eq!(job.progress.attempts[0].reason, "node gpu-1: lost");
    assert_eq!(job.progress.started_at, None);

    let job = job
        .apply(dispatch("gpu-2"), at(6))
        .expect("queued -> dispatched again");
    assert_eq!(job.progress.attempt, 2, "second dispatch is attempt 2");
}

#[test]
fn nothing_follows_a_terminal_state() {
    for terminal in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
        let job = job_in_state(terminal);
        for to in JobState::ALL {
            let err = job
                .apply(change_to(to), at(9))
                .expect_err("terminal state is final");
            assert_eq!(
                err,
                JobError::IllegalTransition {
                    job: job.id,
                    from: terminal,
                    to
                },
                "{terminal} -> {to} must be refused"
            );
        }
    }
}

#[test]
fn transition_table_matches_apply() {
    // Every (from, to) pair: apply succeeds exactly when the table allows it.
    for from in JobState::ALL {
        let job = job_in_state(from);
        for to in JobState::ALL {
            let result = job.apply(change_to(to), at(9));
            assert_eq!(
                result.is_ok(),
                from.can_move_to(to),
                "{from} -> {to}: apply and can_move_to disagree"
            );
            if let Ok(next) = result {
                assert_eq!(next.state(), to);
            }
        }
    }
}

#[test]
fn illegal_moves_are_refused() {
    let queued = job_in_state(JobState::Queued);
    assert!(
        queued.apply(StateChange::Start, at(1)).is_err(),
        "cannot run before dispatch"
    );
    assert!(
        queued
            .apply(
                StateChange::Succeed {
                    outputs: vec![],
                    ui_values: UiValues::new(),
                },
                at(1)
            )
            .is_err(),
        "cannot succeed without running anywhere"
    );
    let dispatched = job_in_state(JobState::Dispatched);
    assert!(
        dispatched.apply(dispatch("gpu-2"), at(1)).is_err(),
        "no double dispatch"
    );
    let running = job_in_state(JobState::Running);
    assert!(
        running.apply(StateChange::Start, at(1)).is_err(),
        "no double start"
    );
}

#[test]
fn apply_leaves_the_original_untouched() {
    let job = queued_job_for_test();
    let before = job.clone();
    let _ = job.apply(dispatch("gpu-1"), at(1)).expect("legal");
    assert_eq!(job, before, "apply is pure");
}

#[test]
fn states_round_trip_through_their_names() {
    for state in JobState::ALL {
        assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
    }
    assert!("done".parse::<JobState>().is_err());
}

#[test]
fn terminal_events_match_terminal_states() {
    let failure = Failure::new(FailureClass::NodeLost, "node gpu-1: lost");
    assert!(
        JobEvent::Succeeded {
            outputs: vec![],
            ui_values: UiValues::new(),
        }
        .is_terminal()
    );
    assert!(
        JobEvent::Failed {
            failure,
            attempts: 3,
            history: Vec::new(),
        }
        .is_terminal()
    );
    assert!(JobEvent::Cancelled { reason: "x".into() }.is_terminal());
    assert!(
        !JobEvent::Retrying {
            attempt: 1,
            reason: "x".into(),
            class: FailureClass::NodeLost,
        }
        .is_terminal()
    );
    assert!(!JobEvent::Started.is_terminal());
}

#[test]
fn prompt_extras_keep_what_the_node_needs_and_nothing_secret() {
    let fields = |value: serde_json::Value| value.as_object().cloned().expect("object");
    let extras = PromptExtras::from_prompt_body(
        &fields(serde_json::json!({
            "prompt": {},
            "client_id": "c1",
            "extra_data": {
                "client_id": "c1",
                "extra_pnginfo": {"workflow": {"nodes": []}},
                "auth_token_comfy_org": "t",
                "api_key_comfy_org": "k"
            },
            "partial_execution_targets": ["9", "12"]
        })),
        1 << 20,
    )
    .expect("valid")
    .expect("something to forward");
    assert_eq!(
        extras.extra_data.keys().collect::<Vec<_>>(),
        ["extra_pnginfo"],
        "client id and credentials are left out"
    );
    assert_eq!(
        extras.partial_execution_targets,
        Some(vec!["9".to_owned(), "12".to_owned()])
    );

    // Nothing but what is left out, or explicit nulls: nothing to forward.
    for nothing in [
        serde_json::json!({"prompt": {}}),
        serde_json::json!({"prompt": {}, "extra_data": {"client_id": "c1"}}),
        serde_json::json!({"prompt": {}, "extra_data": null, "partial_execution_targets": null}),
    ] {
        assert_eq!(
            PromptExtras::from_prompt_body(&fields(nothing), 1 << 20),
            Ok(None)
        );
    }
    // An empty target list is kept: it asks for no output at all.
    assert!(
        PromptExtras::from_prompt_body(
            &fields(serde_json::json!({"partial_execution_targets": []})),
            1 << 20
        )
        .expect("valid")
        .is_some()
    );

    assert_eq!(
        PromptExtras::from_prompt_body(&fields(serde_json::json!({"extra_data": [1]})), 1 << 20),
        Err(ExtrasError::ExtraDataNotObject("a list"))
    );
    assert_eq!(
        PromptExtras::from_prompt_body(
            &fields(serde_json::json!({"partial_execution_targets": ["9", null]})),
            1 << 20
        ),
        Err(ExtrasError::TargetsNotIds("null"))
    );
    let big = serde_json::json!({"extra_data": {"extra_pnginfo": "x".repeat(200)}});
    assert!(matches!(
        PromptExtras::from_prompt_body(&fields(big), 100),
        Err(ExtrasError::TooLarge { limit: 100, .. })
    ));
}
