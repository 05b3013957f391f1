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
}
