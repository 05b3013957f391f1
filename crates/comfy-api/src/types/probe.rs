//! Lean views of `GET /system_stats` and `GET /queue` for a health probe.
//!
//! Problem: a coordinator probes every node about once a second, and the full typed answers
//! ([`SystemStats`](super::SystemStats), [`QueueState`](super::QueueState)) keep everything:
//! every unknown key of `system` and of each device (buffered through serde's `flatten`), and
//! for each queued prompt its whole graph and `extra_data`. A probe reads a handful of numbers
//! and the queued prompt ids, so most of that work is thrown away a moment later.
//!
//! Approach: [`StatsSummary`] and [`QueueSummary`] walk the same JSON with the same rules (the
//! same required fields, the same lenient numbers, the same type checks on every known field,
//! any JSON accepted under unknown keys) but keep only what a probe uses; strings that are
//! only checked are never copied. A document one of them refuses is refused by its full
//! counterpart and the other way round, with the same failing JSON path; the tests hold them
//! to that.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::lenient;

/// A JSON string that is checked but not kept.
struct StrCheck;

impl<'de> Deserialize<'de> for StrCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<StrCheck, E> {
                Ok(StrCheck)
            }
        }
        d.deserialize_str(V)
    }
}

/// `T` read from a JSON object only, as serde reads a struct with a `flatten` field (the
/// full types have one); a derived struct alone would also accept a positional array.
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = MapOnly<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(MapOnly)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The `system` object, checked field by field as [`super::SystemInfo`] decodes it.
#[derive(Deserialize)]
#[allow(dead_code)] // Fields exist for their checks only.
struct SystemCheck {
    #[serde(default)]
    os: StrCheck,
    #[serde(default, deserialize_with = "lenient::u64_any")]
    ram_total: u64,
    #[serde(default, deserialize_with = "lenient::u64_any")]
    ram_free: u64,
    #[serde(default)]
    comfyui_version: Option<StrCheck>,
    #[serde(default)]
    required_frontend_version: Option<StrCheck>,
    #[serde(default)]
    python_version: Option<StrCheck>,
    #[serde(default)]
    pytorch_version: Option<StrCheck>,
    #[serde(default, deserialize_with = "lenient::bool_any")]
    embedded_python: bool,
    #[serde(default)]
    argv: Vec<StrCheck>,
}

/// One device, checked as [`super::Device`] decodes it; `S` is `String` for the device that
/// is kept and [`StrCheck`] for the others.
#[derive(Deserialize)]
struct DeviceWire<S> {
    #[serde(default)]
    name: S,
    #[serde(rename = "type", default)]
    device_type: S,
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    #[allow(dead_code)]
    index: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64_any")]
    vram_total: u64,
    #[serde(default, deserialize_with = "lenient::u64_any")]
    vram_free: u64,
    #[serde(default, deserialize_with = "lenient::u64_any")]
    #[allow(dead_code)]
    torch_vram_total: u64,
    #[serde(default, deserialize_with = "lenient::u64_any")]
    #[allow(dead_code)]
    torch_vram_free: u64,
}

impl Default for StrCheck {
    fn default() -> Self {
        StrCheck
    }
}

/// The compute device of a probe: what placement reads from `/system_stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceSummary {
    /// E.g. `cuda:0 NVIDIA H200 : cudaMallocAsync`, or `cpu`.
    pub name: String,
    /// Torch device type: `cuda`, `cpu`, `mps`, ...
    pub device_type: String,
    /// Total device memory in bytes (system RAM on CPU).
    pub vram_total: u64,
    /// Memory ComfyUI could allocate now without evicting anything.
    pub vram_free: u64,
}

impl DeviceSummary {
    /// Says whether this is a CPU pseudo-device (its memory numbers are system RAM).
    pub fn is_cpu(&self) -> bool {
        self.device_type.eq_ignore_ascii_case("cpu")
    }
}

/// `GET /system_stats` reduced to the compute device (the first listed), decoded with the
/// strictness of [`super::SystemStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSummary {
    /// The device ComfyUI computes on, if the node lists any.
    pub device: Option<DeviceSummary>,
}

impl<'de> Deserialize<'de> for StatsSummary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[allow(dead_code)]
            system: MapOnly<SystemCheck>,
            #[serde(default, deserialize_with = "first_device")]
            devices: Option<DeviceSummary>,
        }
        let wire = Wire::deserialize(d)?;
        Ok(StatsSummary {
            device: wire.devices,
        })
    }
}

/// Keeps the first device of the list and checks the others.
fn first_device<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DeviceSummary>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<DeviceSummary>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<MapOnly<DeviceWire<String>>>()?;
            while seq
                .next_element::<MapOnly<DeviceWire<StrCheck>>>()?
                .is_some()
            {}
            Ok(first.map(|MapOnly(device)| DeviceSummary {
                name: device.name,
                device_type: device.device_type,
                vram_total: device.vram_total,
                vram_free: device.vram_free,
            }))
        }
    }
    d.deserialize_seq(V)
}

/// `GET /queue` reduced to counts and prompt ids, decoded with the strictness of
/// [`super::QueueState`] (each item checked as [`super::QueueItem`] decodes it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueSummary {
    /// Prompts running (0 or 1).
    pub running: usize,
    /// Prompts pending.
    pub pending: usize,
    /// The ids of the running and pending prompts, running first, pending in the order the
    /// node listed them (not sorted).
    pub prompt_ids: Vec<String>,
}

impl QueueSummary {
    /// Number of prompts running plus pending (what `queue_remaining` counts).
    pub fn len(&self) -> usize {
        self.running + self.pending
    }

    /// Says whether nothing runs and nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Says whether `prompt_id` is running or pending.
    pub fn contains(&self, prompt_id: &str) -> bool {
        self.prompt_ids.iter().any(|id| id == prompt_id)
    }
}

impl<'de> Deserialize<'de> for QueueSummary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            queue_running: Items,
            #[serde(default)]
            queue_pending: Items,
        }
        let wire = Wire::deserialize(d)?;
        let running = wire.queue_running.0.len();
        let pending = wire.queue_pending.0.len();
        let mut prompt_ids = wire.queue_running.0;
        prompt_ids.extend(wire.queue_pending.0);
        Ok(QueueSummary {
            running,
            pending,
            prompt_ids,
        })
    }
}

/// A list of queue items, reduced to their prompt ids.
#[derive(Default)]
struct Items(Vec<String>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Items;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(ItemId(id)) = seq.next_element()? {
                    ids.push(id);
                }
                Ok(Items(ids))
            }
        }
        d.deserialize_seq(V)
    }
}

/// One queue item reduced to its prompt id; the other elements are checked, not kept.
struct ItemId(String);

impl<'de> Deserialize<'de> for ItemId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ItemId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a queue item [number, prompt_id, prompt, extra_data, outputs]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ItemId, A::Error> {
                let number: serde_json::Value = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                lenient::f64_any(number).map_err(de::Error::custom)?;
                let prompt_id: serde_json::Value = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let prompt_id = lenient::id_string(prompt_id).map_err(de::Error::custom)?;
                // The graph: any JSON, never kept.
                seq.next_element::<IgnoredAny>()?
                    .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                seq.next_element::<Option<ExtraCheck>>()?;
                seq.next_element::<Option<IdsCheck>>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ItemId(prompt_id))
            }
        }
        d.deserialize_seq(V)
    }
}

/// `extra_data`: an object (or null), checked but not kept.
struct ExtraCheck;

impl<'de> Deserialize<'de> for ExtraCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtraCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("extra_data as an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExtraCheck, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ExtraCheck)
            }
        }
        d.deserialize_map(V)
    }
}

/// `outputs_to_execute`: a list of ids (strings or numbers), checked but not kept.
struct IdsCheck;

impl<'de> Deserialize<'de> for IdsCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdsCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdsCheck, A::Error> {
                while seq.next_element::<IdCheck>()?.is_some() {}
                Ok(IdsCheck)
            }
        }
        d.deserialize_seq(V)
    }
}

/// An id: a string, or a number Python wrote for one.
struct IdCheck;

impl<'de> Deserialize<'de> for IdCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IdCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an id string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<IdCheck, E> {
                Ok(IdCheck)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<IdCheck, E> {
                Ok(IdCheck)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<IdCheck, E> {
                Ok(IdCheck)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<IdCheck, E> {
                Ok(IdCheck)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{QueueState, SystemStats};

    /// Decodes `text` both ways and checks that they agree on success, on the failing path
    /// and on what the summary keeps.
    fn same_stats(text: &str) {
        let full = lenient::decode::<SystemStats>(text.as_bytes());
        let lean = lenient::decode::<StatsSummary>(text.as_bytes());
        match (full, lean) {
            (Ok(full), Ok(lean)) => {
                let want = full.devices.first().map(|d| DeviceSummary {
                    name: d.name.clone(),
                    device_type: d.device_type.clone(),
                    vram_total: d.vram_total,
                    vram_free: d.vram_free,
                });
                assert_eq!(lean.device, want, "{text}");
            }
            (Err(full), Err(lean)) => assert_eq!(full.path, lean.path, "{text}"),
            (full, lean) => panic!("disagree on {text}: full {full:?}, lean {lean:?}"),
        }
    }

    fn same_queue(text: &str) {
        let full = lenient::decode::<QueueState>(text.as_bytes());
        let lean = lenient::decode::<QueueSummary>(text.as_bytes());
        match (full, lean) {
            (Ok(full), Ok(lean)) => {
                assert_eq!(lean.running, full.running.len(), "{text}");
                assert_eq!(lean.pending, full.pending.len(), "{text}");
                let mut want: Vec<&str> = full
                    .running
                    .iter()
                    .chain(&full.pending)
                    .map(|i| i.prompt_id.as_str())
                    .collect();
                let mut got: Vec<&str> = lean.prompt_ids.iter().map(String::as_str).collect();
                want.sort_unstable();
                got.sort_unstable();
                assert_eq!(got, want, "{text}");
            }
            // The lean decoder may point deeper (into `extra_data`), never elsewhere.
            (Err(full), Err(lean)) => assert!(lean.path.starts_with(&full.path), "{text}"),
            (full, lean) => panic!("disagree on {text}: full {full:?}, lean {lean:?}"),
        }
    }

    const SYSTEM: &str = r#""system": {"os": "posix", "ram_total": 1, "ram_free": 1.0,
        "comfyui_version": "0.3.64", "embedded_python": false, "argv": ["main.py"],
        "installed_templates_version": "0.1.95"}"#;

    #[test]
    fn stats_summary_accepts_and_refuses_what_the_full_type_does() {
        let device = r#"{"name": "cuda:0 X", "type": "cuda", "index": 0, "vram_total": 8.0,
            "vram_free": "7", "torch_vram_total": 0, "torch_vram_free": 0, "other": [1, {}]}"#;
        let cases = [
            format!(r#"{{{SYSTEM}, "devices": [{device}]}}"#),
            format!(r#"{{{SYSTEM}, "devices": [{device}, {{"name": "cpu", "type": "cpu"}}]}}"#),
            format!(r#"{{{SYSTEM}, "devices": []}}"#),
            format!(r#"{{{SYSTEM}}}"#),
            format!(r#"{{{SYSTEM}, "devices": null}}"#),
            format!(r#"{{{SYSTEM}, "devices": [{{"name": 3}}]}}"#),
            format!(r#"{{{SYSTEM}, "devices": [{device}, {{"type": 3}}]}}"#),
            format!(r#"{{{SYSTEM}, "devices": [{{"vram_free": -1}}]}}"#),
            format!(r#"{{{SYSTEM}, "devices": [{{"vram_free": NaN}}]}}"#),
            format!(r#"{{{SYSTEM}, "devices": [{{"index": null}}]}}"#),
            format!(r#"{{{SYSTEM}, "devices": [{{"index": "x"}}]}}"#),
            format!(r#"{{{SYSTEM}, "devices": [[]]}}"#),
            format!(r#"{{{SYSTEM}, "devices": [{device}, ["cpu"]]}}"#),
            r#"{"devices": []}"#.to_owned(),
            r#"{"system": [], "devices": []}"#.to_owned(),
            r#"{"system": ["posix"]}"#.to_owned(),
            r#"[{"os": "posix"}]"#.to_owned(),
            r#"{"system": {"os": 1}}"#.to_owned(),
            r#"{"system": {"os": null}}"#.to_owned(),
            r#"{"system": {"argv": ["a", 2]}}"#.to_owned(),
            r#"{"system": {"argv": null}}"#.to_owned(),
            r#"{"system": {"embedded_python": "yes"}}"#.to_owned(),
            r#"{"system": {"embedded_python": 1}}"#.to_owned(),
            r#"{"system": {"ram_total": -5}}"#.to_owned(),
            r#"{"system": {"python_version": "3.11 \"x\""}}"#.to_owned(),
            r#"{"system": {}, "devices": [{"name": "a\u00e9"}]}"#.to_owned(),
            r#"{"system": {}, "extra": {"deep": [1, 2, {"x": null}]}}"#.to_owned(),
            r#"[]"#.to_owned(),
            r#"{"system": {}"#.to_owned(),
        ];
        for case in &cases {
            same_stats(case);
        }
        let lean: StatsSummary =
            lenient::decode(format!(r#"{{{SYSTEM}, "devices": [{device}]}}"#).as_bytes())
                .expect("decodes");
        let device = lean.device.expect("a device");
        assert_eq!(device.name, "cuda:0 X");
        assert_eq!((device.vram_total, device.vram_free), (8, 7));
        assert!(!device.is_cpu());
    }

    #[test]
    fn queue_summary_accepts_and_refuses_what_the_full_type_does() {
        let cases = [
            r#"{"queue_running": [], "queue_pending": []}"#,
            r#"{}"#,
            r#"{"queue_running": [[0, "a", {"1": {"inputs": {}}}, {"client_id": "c"}, ["9"]]],
                "queue_pending": [[2, "c", {}, {}, []], [1.0, 7, {}, null, null, "extra"]]}"#,
            r#"{"queue_running": [[0, "a", {}]]}"#,
            r#"{"queue_running": [[0, "a"]]}"#,
            r#"{"queue_running": [[0]]}"#,
            r#"{"queue_running": [[]]}"#,
            r#"{"queue_running": [["x", "a", {}]]}"#,
            r#"{"queue_running": [["1.5", "a", {}]]}"#,
            r#"{"queue_running": [[null, "a", {}]]}"#,
            r#"{"queue_running": [[0, null, {}]]}"#,
            r#"{"queue_running": [[0, true, {}]]}"#,
            r#"{"queue_running": [[0, "a", {}, []]]}"#,
            r#"{"queue_running": [[0, "a", {}, "x"]]}"#,
            r#"{"queue_running": [[0, "a", {}, {}, {}]]}"#,
            r#"{"queue_running": [[0, "a", {}, {}, [true]]]}"#,
            r#"{"queue_running": [[0, "a", {}, {}, [null]]]}"#,
            r#"{"queue_running": [[0, "a", {}, {}, [1, "2"]]]}"#,
            r#"{"queue_running": [[0, "a", {}, {}, "9"]]}"#,
            r#"{"queue_running": null}"#,
            r#"{"queue_running": {}}"#,
            r#"{"queue_pending": [{}]}"#,
            r#"{"queue_pending": [[NaN, "a", {}]]}"#,
            r#"{"queue_pending": [[0, "a", {"x": NaN}]]}"#,
            r#"{"queue_pending": [[0, "a\"b", {}]]}"#,
            r#"[]"#,
        ];
        for case in cases {
            same_queue(case);
        }
    }

    #[test]
    fn recorded_answers_decode_the_same_both_ways() {
        // The recorded traffic lives beside the repository, as for the integration tests.
        let shared = std::env::var_os("COMFYFLEET_SHARED_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
            });
        let dir = shared.join("comfyui-captures");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("recorded answers not found at {dir:?}: {e}"));
        let mut seen = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_stats = name.contains("system_stats");
            let is_queue = name.starts_with("http_get") && name.contains("_queue");
            if !is_stats && !is_queue {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).expect("readable capture");
            let capture: serde_json::Value = serde_json::from_str(&text).expect("capture json");
            let body = capture["body"].to_string();
            if is_stats {
                same_stats(&body);
            } else {
                same_queue(&body);
            }
            seen += 1;
        }
        assert!(
            seen > 0,
            "no recorded /system_stats or /queue answer in {dir:?}"
        );
    }
}
