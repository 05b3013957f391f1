//! Checks that the embedded descriptor set is what reflection clients need: it decodes, names
//! both services with their methods, and carries the well-known types the contract imports.

use fleet_proto::{FILE_DESCRIPTOR_SET, FLEET_SERVICE_NAME, JOB_SERVICE_NAME, v1};
use prost::Message;
use prost_types::FileDescriptorSet;

fn decoded_set_for_test() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("the embedded descriptor set must decode")
}

/// Lists `package.Service` names with their method names.
fn services(set: &FileDescriptorSet) -> Vec<(String, Vec<String>)> {
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().map(move |service| {
                let name = format!("{}.{}", file.package(), service.name());
                let methods = service.method.iter().map(|m| m.name().to_owned()).collect();
                (name, methods)
            })
        })
        .collect()
}

#[test]
fn descriptor_set_names_both_services_and_their_methods() {
    let set = decoded_set_for_test();
    let services = services(&set);

    let job = services
        .iter()
        .find(|(name, _)| name == JOB_SERVICE_NAME)
        .unwrap_or_else(|| panic!("{JOB_SERVICE_NAME} must be in the set, found {services:?}"));
    for method in [
        "SubmitJob",
        "WatchJob",
        "GetJob",
        "ListJobs",
        "CancelJob",
        "FetchOutput",
    ] {
        assert!(
            job.1.iter().any(|m| m == method),
            "JobService must have {method}"
        );
    }

    let fleet = services
        .iter()
        .find(|(name, _)| name == FLEET_SERVICE_NAME)
        .unwrap_or_else(|| panic!("{FLEET_SERVICE_NAME} must be in the set, found {services:?}"));
    for method in ["ListNodes", "DrainNode", "UndrainNode"] {
        assert!(
            fleet.1.iter().any(|m| m == method),
            "FleetService must have {method}"
        );
    }
}

#[test]
fn descriptor_set_includes_imported_well_known_types() {
    let set = decoded_set_for_test();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    for needed in [
        "google/protobuf/timestamp.proto",
        "google/protobuf/duration.proto",
    ] {
        assert!(
            names.contains(&needed),
            "{needed} must be embedded for reflection, got {names:?}"
        );
    }
}

#[test]
fn descriptor_set_keeps_comments_for_reflection_clients() {
    let set = decoded_set_for_test();
    let job_file = set
        .file
        .iter()
        .find(|f| f.name() == "comfyfleet/v1/job.proto")
        .expect("job.proto must be in the set");
    let info = job_file
        .source_code_info
        .as_ref()
        .expect("source info must be kept");
    assert!(
        info.location
            .iter()
            .any(|l| l.leading_comments().contains("Where a job is in its life")),
        "the JobState comment must survive into the descriptor set"
    );
}

#[test]
fn job_event_round_trips_through_the_wire_format() {
    let event = v1::JobEvent {
        sequence: 7,
        time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        kind: Some(v1::job_event::Kind::Progress(v1::job_event::Progress {
            node_id: "3".into(),
            value: 4.0,
            max: 20.0,
        })),
    };
    let bytes = event.encode_to_vec();
    let back = v1::JobEvent::decode(bytes.as_slice()).expect("an encoded event must decode");
    assert_eq!(back, event, "an event must survive encoding unchanged");
}

#[test]
fn enum_values_lose_their_prefix_and_keep_their_numbers() {
    // The coordinator and clients rely on these names; the numbers are the wire contract.
    assert_eq!(v1::JobState::Queued as i32, 1);
    assert_eq!(v1::JobState::Cancelled as i32, 6);
    assert_eq!(
        v1::JobState::from_str_name("JOB_STATE_RUNNING"),
        Some(v1::JobState::Running)
    );
    assert_eq!(
        v1::NodeHealth::Draining.as_str_name(),
        "NODE_HEALTH_DRAINING"
    );
    assert_eq!(v1::FailureClass::OutOfMemory as i32, 2);
    assert_eq!(v1::CancelOutcome::AlreadyTerminal as i32, 4);
}
