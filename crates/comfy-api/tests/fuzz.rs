//! Property tests: the workflow parser and the frame decoders never panic, and accepted
//! workflows are forwarded byte for byte.

use comfy_api::workflow::Workflow;
use comfy_api::ws::WsEvent;
use proptest::prelude::*;

/// Small API-format-like graphs: node ids 0..8 with links to random (possibly missing) ids.
fn graph() -> impl Strategy<Value = String> {
    let node = (
        0u8..8,
        prop::collection::vec((0u8..10, -2i64..3, any::<u64>(), any::<f64>()), 0..4),
    );
    prop::collection::vec(node, 1..8).prop_map(|nodes| {
        let body: Vec<String> = nodes
            .iter()
            .enumerate()
            .map(|(i, (_, inputs))| {
                let ins: Vec<String> = inputs
                    .iter()
                    .enumerate()
                    .map(|(j, (target, idx, big, f))| match j % 3 {
                        0 => format!(r#""l{j}": ["{target}", {idx}]"#),
                        1 => format!(r#""n{j}": {big}"#),
                        _ if f.is_finite() => format!(r#""f{j}": {f:?}"#),
                        _ => format!(r#""s{j}": "x""#),
                    })
                    .collect();
                format!(
                    r#""{i}": {{"class_type": "C{i}", "inputs": {{{}}}}}"#,
                    ins.join(", ")
                )
            })
            .collect();
        format!("{{{}}}", body.join(", "))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Workflow::parse(&bytes);
        let _ = Workflow::parse_unwrapping(&bytes);
    }

    #[test]
    fn accepted_graphs_are_forwarded_verbatim(text in graph()) {
        if let Ok(wf) = Workflow::parse(text.as_bytes()) {
            prop_assert_eq!(wf.as_str(), text.as_str());
            let _ = wf.cost();
            let _ = wf.models();
            let _ = wf.input_files();
        }
    }

    #[test]
    fn binary_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), event in 0u32..6) {
        let mut frame = event.to_be_bytes().to_vec();
        frame.extend_from_slice(&bytes);
        let _ = WsEvent::from_binary(&frame);
        let _ = WsEvent::from_binary(&bytes);
    }

    #[test]
    fn text_decoder_never_panics(s in ".{0,200}", kind in prop::sample::select(vec![
        "status", "executing", "progress", "progress_state", "executed", "execution_error",
        "execution_start", "execution_cached", "execution_interrupted", "feature_flags", "x"])) {
        let _ = WsEvent::from_text(&s);
        let _ = WsEvent::from_text(&format!(r#"{{"type":"{kind}","data":{s:?}}}"#));
    }

    /// The direct decoder may only ever agree with the tree-based one: the same event, or the
    /// same refusal. Frames start from a valid body of each type, as a node sends it, and get
    /// some of their values replaced or keys added.
    #[test]
    fn direct_and_tree_text_decoders_agree(
        kind in 0usize..8,
        changes in prop::collection::vec((
            prop::sample::select(vec![
                "prompt_id", "node", "display_node", "value", "max", "timestamp", "nodes",
                "output", "status", "sid", "extra"]),
            prop::sample::select(vec![
                "null", "0", "3", "-1", "2.5", "1e3", "4294967296", "\"p1\"", "\"9\"",
                "true", "[]", "[\"1\"]", "{}", "{\"exec_info\":{\"queue_remaining\":0}}",
                "{\"images\":[{\"filename\":\"a.png\",\"subfolder\":\"\",\"type\":\"output\"}]}"]),
        ), 0..3),
        drop_data in any::<bool>(),
    ) {
        let (name, body) = [
            ("status", r#"{"status":{"exec_info":{"queue_remaining":1}},"sid":"s1"}"#),
            ("execution_start", r#"{"prompt_id":"p1","timestamp":1700000000000}"#),
            ("execution_cached", r#"{"nodes":["1","2"],"prompt_id":"p1","timestamp":1700000000001}"#),
            ("executing", r#"{"node":"3","display_node":"3","prompt_id":"p1"}"#),
            ("progress", r#"{"value":4,"max":20,"prompt_id":"p1","node":"3"}"#),
            ("progress_state", r#"{"prompt_id":"p1","nodes":{"3":{"value":4,"max":20,"state":"running","node_id":"3","prompt_id":"p1","display_node_id":"3","parent_node_id":null,"real_node_id":"3"}}}"#),
            ("executed", r#"{"node":"9","display_node":"9","output":{"images":[{"filename":"a_00001_.png","subfolder":"","type":"output"}]},"prompt_id":"p1"}"#),
            ("execution_success", r#"{"prompt_id":"p1","timestamp":1700000000002}"#),
        ][kind];
        let mut data: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(body).expect("valid body");
        for (key, value) in &changes {
            data.insert((*key).to_owned(), serde_json::from_str(value).expect("valid value"));
        }
        let frame = if drop_data {
            format!(r#"{{"type":"{name}"}}"#)
        } else {
            format!(r#"{{"type":"{name}","data":{}}}"#, serde_json::Value::Object(data))
        };
        // Compared by their debug text: a missing step count decodes to NaN on both paths,
        // and NaN is not equal to itself.
        prop_assert_eq!(
            format!("{:?}", WsEvent::from_text(&frame)),
            format!("{:?}", WsEvent::from_text_via_tree(&frame)),
            "{}",
            frame
        );
    }
}
