//! Real workflows: byte-exact round trips, refusals that explain themselves, and analysis.

mod support;

use comfy_api::PromptRequest;
use comfy_api::workflow::{Envelope, Workflow, WorkflowError};
use support::{list, workflow_bytes};

/// Every number token (outside strings) of a JSON text, in order.
fn number_tokens(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let (mut out, mut i, mut in_string, mut escaped) = (Vec::new(), 0, false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
        } else if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            out.push(&text[start..i]);
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn every_api_workflow_round_trips_byte_exact_in_its_numbers() {
    let files = list("workflows", "", ".json");
    assert!(
        files.len() >= 15,
        "expected the workflow corpus, found {}",
        files.len()
    );
    for file in &files {
        let bytes = workflow_bytes(file);
        let (wf, envelope) =
            Workflow::parse_unwrapping(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        let source = std::str::from_utf8(&bytes).unwrap();
        let inner = match envelope {
            Some(_) => {
                let (start, _) = source
                    .match_indices(wf.as_str())
                    .next()
                    .expect("unwrapped text is a sub-slice");
                &source[start..start + wf.as_str().len()]
            }
            None => source.trim(),
        };
        assert_eq!(
            wf.as_str(),
            inner,
            "{file}: the forwarded graph must be the submitted text"
        );

        // And through a /prompt body, every number token survives unchanged.
        let body = serde_json::to_string(&PromptRequest::new(&wf, "client-1")).unwrap();
        let want = number_tokens(inner);
        let got = number_tokens(&body);
        for tok in &want {
            assert!(
                got.contains(tok),
                "{file}: number {tok} lost in the request body"
            );
        }
        assert!(
            !want.is_empty(),
            "{file}: a workflow without numbers is suspicious"
        );
    }
}

#[test]
fn extreme_numbers_survive_exactly() {
    let wf = Workflow::parse(&workflow_bytes("sdxl-minimal-seed-u64max-DERIVED.json")).unwrap();
    let body = serde_json::to_string(&PromptRequest::new(&wf, "c")).unwrap();
    assert!(
        body.contains("18446744073709551615"),
        "u64::MAX seed must be forwarded as written"
    );

    let jasper = Workflow::parse(&workflow_bytes(
        "sdxl-ipadapter-regional-badman-upres-jasper.json",
    ))
    .unwrap();
    assert!(jasper.as_str().contains("0.7000000000000001"));
    let body = serde_json::to_string(&PromptRequest::new(&jasper, "c")).unwrap();
    assert!(body.contains("0.7000000000000001"));

    let odd = br#"{"1":{"class_type":"X","inputs":{"a":1e300,"b":-0.0,"c":1.0E+2,"d":123456789012345678901234567890}}}"#;
    let wf = Workflow::parse(odd).unwrap();
    for tok in ["1e300", "-0.0", "1.0E+2", "123456789012345678901234567890"] {
        assert!(wf.as_str().contains(tok), "{tok} must be kept as written");
    }
}

#[test]
fn unreachable_node_missing_an_input_is_not_rejected() {
    let wf = Workflow::parse(&workflow_bytes(
        "sdxl-ipadapter-regional-badman-upres-jasper.json",
    ))
    .unwrap();
    let n518 = wf.node("518").expect("node 518 exists");
    assert_eq!(n518.class_type, "LatentUpscale");
    assert!(
        !n518.inputs.contains_key("samples"),
        "the corpus node lacks `samples`"
    );
}

#[test]
fn envelopes_are_named_by_the_strict_parse_and_unwrapped_on_request() {
    let bytes = workflow_bytes("flux-fp8-checkpoint-runpod-input-wrapper.json");
    let err = Workflow::parse(&bytes).unwrap_err();
    assert_eq!(err, WorkflowError::Wrapped(Envelope::RunPodInput));
    assert!(err.to_string().contains("runpod"), "{err}");
    let (wf, env) = Workflow::parse_unwrapping(&bytes).unwrap();
    assert_eq!(env, Some(Envelope::RunPodInput));
    assert!(wf.class_types().contains("CheckpointLoaderSimple"));

    let body = br#"{"prompt": {"1": {"class_type": "SaveImage", "inputs": {"seed": 18446744073709551615}}}, "client_id": "x"}"#;
    assert_eq!(
        Workflow::parse(body).unwrap_err(),
        WorkflowError::Wrapped(Envelope::PromptBody)
    );
    let (wf, env) = Workflow::parse_unwrapping(body).unwrap();
    assert_eq!(env, Some(Envelope::PromptBody));
    assert_eq!(
        wf.as_str(),
        r#"{"1": {"class_type": "SaveImage", "inputs": {"seed": 18446744073709551615}}}"#
    );

    // A graph whose node happens to be called "prompt" is not an envelope.
    let graph = br#"{"prompt": {"class_type": "SaveImage", "inputs": {}}}"#;
    assert_eq!(Workflow::parse_unwrapping(graph).unwrap().1, None);

    // Two graphs, one under `prompt` and one under `workflow`: which was meant is a guess.
    let both = br#"{"prompt": {"1": {"class_type": "SaveImage", "inputs": {}}}, "workflow": {"2": {"class_type": "SaveImage", "inputs": {}}}}"#;
    let err = Workflow::parse_unwrapping(both).unwrap_err();
    assert_eq!(err, WorkflowError::AmbiguousEnvelope);
    assert!(err.to_string().contains("send one of them"), "{err}");
    // An editor graph kept under `extra_data` beside `prompt` is no second graph.
    let with_editor = br#"{"prompt": {"1": {"class_type": "SaveImage", "inputs": {}}}, "extra_data": {"extra_pnginfo": {"workflow": {"nodes": []}}}}"#;
    assert_eq!(
        Workflow::parse_unwrapping(with_editor).unwrap().1,
        Some(Envelope::PromptBody)
    );
}

#[test]
fn editor_exports_are_refused_with_what_to_do() {
    let err =
        Workflow::parse(&workflow_bytes("ui-format/flux-fp8-UI-FORMAT-fofr.json")).unwrap_err();
    assert_eq!(err, WorkflowError::EditorFormat);
    assert!(err.to_string().contains("Export (API)"), "{err}");
    let err = Workflow::parse_unwrapping(&workflow_bytes(
        "ui-format/subgraph-blueprint-minified-UI-FORMAT-comfy.json",
    ))
    .unwrap_err();
    assert_eq!(err, WorkflowError::SubgraphBlueprint);
    assert!(err.to_string().contains("subgraph blueprint"), "{err}");
    for file in list("workflows/ui-format", "", ".json") {
        let err =
            Workflow::parse_unwrapping(&workflow_bytes(&format!("ui-format/{file}"))).unwrap_err();
        assert!(
            matches!(
                err,
                WorkflowError::EditorFormat | WorkflowError::SubgraphBlueprint
            ),
            "{file}: {err}"
        );
    }
}

#[test]
fn bad_json_says_where_and_that_it_looks_like_python() {
    let files = list("workflows/bad", "", "");
    assert!(!files.is_empty(), "bad/ must hold files");
    for file in files {
        let err = Workflow::parse_unwrapping(&workflow_bytes(&format!("bad/{file}"))).unwrap_err();
        match &err {
            WorkflowError::InvalidJson {
                line,
                column,
                python_dict,
                ..
            } => {
                assert!(*line > 1 && *column > 0, "{file}: position must be given");
                assert!(*python_dict, "{file}: trailing commas must be recognised");
            }
            other => panic!("{file}: expected invalid json, got {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("line") && msg.contains("python dict"), "{msg}");
    }
    let err =
        Workflow::parse(b"{\n  \"1\": {\"class_type\": \"X\" \"inputs\": {}}\n}").unwrap_err();
    assert!(
        matches!(
            err,
            WorkflowError::InvalidJson {
                line: 2,
                python_dict: false,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn structural_errors_name_the_nodes() {
    let cases: [(&[u8], &str); 11] = [
        (b"[]", "json object"),
        (br#"{"7": {"class_type": "", "inputs": {}}}"#, "node 7: `class_type` is empty"),
        (br#"{"7": {"class_type": " ", "inputs": {}}}"#, "node 7: `class_type` is empty"),
        (
            b"\xEF\xBB\xBF{\"7\": {\"class_type\": \"X\", \"inputs\": {}}}",
            "line 1 column 1: the text starts with a utf-8 byte order mark (bom)",
        ),
        (b"{}", "no nodes"),
        (br#"{"7": 3}"#, "node 7"),
        (br#"{"7": {"inputs": {}}}"#, "node 7: missing or non-string `class_type`"),
        (br#"{"7": {"class_type": "X"}}"#, "node 7: missing or non-object `inputs`"),
        (br#"{"7": {"class_type": "X", "inputs": {"a": ["9", 0]}}}"#, "node 7: input `a` links to node 9"),
        (br#"{"7": {"class_type": "X", "inputs": {"a": ["7", -1]}}}"#, "output index -1"),
        (
            br#"{"1": {"class_type": "X", "inputs": {"a": ["2", 0]}}, "2": {"class_type": "X", "inputs": {"b": ["3", 0]}}, "3": {"class_type": "X", "inputs": {"c": ["1", 0]}}}"#,
            "cycle through nodes 1 -> 2 -> 3 -> 1",
        ),
    ];
    for (input, want) in cases {
        let err = Workflow::parse(input).unwrap_err().to_string();
        assert!(
            err.contains(want),
            "{}: got {err:?}, want it to contain {want:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn analysis_finds_models_inputs_and_cost() {
    let wf = Workflow::parse(&workflow_bytes("sd35-medium-txt2img-salad.json")).unwrap();
    let models = wf.models_by_folder();
    assert!(models["checkpoints"].contains("sd3.5_medium.safetensors"));
    assert_eq!(
        models["text_encoders"].len(),
        3,
        "TripleCLIPLoader names three encoders: {models:?}"
    );

    let z = Workflow::parse(&workflow_bytes(
        "zimage-t2i-chinese-titles-lora-unicode-filename-toonflow.json",
    ))
    .unwrap();
    let zm = z.models_by_folder();
    assert!(
        zm["loras"].iter().any(|n| n.contains("画风")),
        "CJK lora name: {zm:?}"
    );
    assert!(zm.contains_key("diffusion_models"));

    let infl = Workflow::parse(&workflow_bytes(
        "sdxl-controlnet-ipadapter-reactor-upscale-influencer.json",
    ))
    .unwrap();
    let files = infl.input_files();
    assert!(
        files
            .iter()
            .any(|f| f.name == "5 (2).png" && f.directory == "input"),
        "{files:?}"
    );
    assert!(infl.models_by_folder().contains_key("upscale_models"));

    let jasper = Workflow::parse(&workflow_bytes(
        "sdxl-ipadapter-regional-badman-upres-jasper.json",
    ))
    .unwrap();
    let annotated = jasper
        .input_files()
        .into_iter()
        .find(|f| f.name.starts_with("clipspace/"))
        .expect("annotated");
    assert!(
        !annotated.name.ends_with(']') && annotated.directory == "input",
        "{annotated:?}"
    );

    let supir = Workflow::parse(&workflow_bytes("supir-upscale-rgthree-nested-fofr.json")).unwrap();
    assert!(
        supir.input_files().is_empty(),
        "URL-valued LoadImage is not an upload"
    );

    let basic = Workflow::parse(&workflow_bytes("sdxl-baseline-tutorial.json")).unwrap();
    let cost = basic.cost();
    assert_eq!(cost.samplers.len(), 1);
    let s = &cost.samplers[0];
    assert!(s.latent_known && s.steps_known, "{s:?}");
    let steps = basic
        .nodes()
        .find_map(|(_, n)| n.inputs.get("steps")?.as_u64())
        .unwrap();
    assert_eq!(s.latent_pixels, 1024 * 1024);
    assert_eq!(cost.pixel_steps(), u128::from(steps) * 1024 * 1024);
    assert_eq!(basic.output_nodes(|c| c == "SaveImage").len(), 1);

    let anim = Workflow::parse(&workflow_bytes(
        "animatediff-controlnet-lora-vhs-salad.json",
    ))
    .unwrap();
    assert!(
        anim.cost().samplers.iter().all(|s| !s.latent_known),
        "linked batch_size counts as unknown"
    );
}

#[test]
fn sampler_custom_takes_steps_from_its_scheduler() {
    let wf = Workflow::parse(
        br#"{"1": {"class_type": "BasicScheduler", "inputs": {"steps": 8, "model": ["3", 0]}},
             "2": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 640, "height": 320, "batch_size": 2}},
             "3": {"class_type": "UNETLoader", "inputs": {"unet_name": "u.safetensors"}},
             "4": {"class_type": "SamplerCustomAdvanced", "inputs": {"sigmas": ["1", 0], "latent_image": ["2", 0]}}}"#,
    )
    .unwrap();
    let cost = wf.cost();
    assert_eq!(cost.samplers.len(), 1, "the scheduler is not a sampler");
    assert_eq!(cost.pixel_steps(), 8 * 640 * 320 * 2);
}
