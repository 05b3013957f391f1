//! Writing output files the way ComfyUI names them.
//!
//! SaveImage-style nodes scan the target folder for `prefix_NNNNN_` files and continue the
//! counter; PreviewImage uses `ComfyUI_temp_` plus five random letters in the temp folder;
//! SaveLatent writes `.latent` files; animated savers write one `.webp`. A prefix that would
//! leave the output folder fails at run time with ComfyUI's message.

use std::path::{Component, Path, PathBuf};

use rand::Rng;
use serde_json::{Value, json};

use crate::images;
use crate::nodes::Save;
use crate::state::Dirs;

// NOTE: a fresh temp suffix is drawn per execution; ComfyUI keeps one per node object while its
// object cache lives, so two runs of the same PreviewImage node id here get different prefixes.
// ComfyUI's alphabet for temp prefixes (it has no `w` and two `p`s).
const TEMP_ALPHABET: &[u8] = b"abcdefghijklmnopqrstupvxyz";

/// Writes the files of `save` and returns the node's UI dict.
pub fn write(dirs: &Dirs, save: &Save, prompt_text: &str) -> Result<Value, String> {
    match save {
        Save::Images {
            prefix,
            temp,
            images: list,
        } => {
            let (base, kind, prefix) = if *temp {
                let suffix: String = (0..5)
                    .map(|_| {
                        TEMP_ALPHABET[rand::rng().random_range(0..TEMP_ALPHABET.len())] as char
                    })
                    .collect();
                (&dirs.temp, "temp", format!("ComfyUI_temp_{suffix}"))
            } else {
                (&dirs.output, "output", prefix.clone())
            };
            let (folder, subfolder, name) = resolve(base, &prefix)?;
            let mut refs = Vec::new();
            for (counter, (w, h, color)) in (next_counter(&folder, &name)..).zip(list.iter()) {
                let (sw, sh) = images::scaled(*w, *h, images::MAX_SIDE);
                let file = format!("{name}_{counter:05}_.png");
                let bytes = images::png(
                    sw,
                    sh,
                    &images::solid_rgba(sw, sh, *color),
                    false,
                    &[("prompt", prompt_text.to_string())],
                );
                std::fs::write(folder.join(&file), bytes)
                    .map_err(|e| format!("cannot write {file}: {e}"))?;
                refs.push(json!({"filename": file, "subfolder": subfolder, "type": kind}));
            }
            Ok(json!({"images": refs}))
        }
        Save::Latent { prefix, w, h, b } => {
            let (folder, subfolder, name) = resolve(&dirs.output, prefix)?;
            let counter = next_counter(&folder, &name);
            let file = format!("{name}_{counter:05}_.latent");
            let bytes = images::latent(*b, (*w / 8).clamp(1, 128), (*h / 8).clamp(1, 128));
            std::fs::write(folder.join(&file), bytes)
                .map_err(|e| format!("cannot write {file}: {e}"))?;
            Ok(json!({"latents": [{"filename": file, "subfolder": subfolder, "type": "output"}]}))
        }
        Save::Animated { prefix, frame } => {
            let (folder, subfolder, name) = resolve(&dirs.output, prefix)?;
            let counter = next_counter(&folder, &name);
            let file = format!("{name}_{counter:05}_.webp");
            let (sw, sh) = images::scaled(frame.0, frame.1, images::MAX_SIDE);
            let bytes = images::webp(sw, sh, &images::solid_rgba(sw, sh, frame.2));
            std::fs::write(folder.join(&file), bytes)
                .map_err(|e| format!("cannot write {file}: {e}"))?;
            Ok(
                json!({"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": [true]}),
            )
        }
    }
}

// Splits a prefix into (folder, subfolder, file name), refusing anything outside `base`.
fn resolve(base: &Path, prefix: &str) -> Result<(PathBuf, String, String), String> {
    let normal: Vec<String> = {
        let mut parts: Vec<String> = Vec::new();
        for c in Path::new(prefix).components() {
            match c {
                Component::Normal(p) => parts.push(p.to_string_lossy().to_string()),
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(outside(base, prefix));
                    }
                }
                Component::CurDir => {}
                _ => return Err(outside(base, prefix)),
            }
        }
        parts
    };
    let Some((name, dirs)) = normal.split_last() else {
        return Ok((base.to_path_buf(), String::new(), String::new()));
    };
    let subfolder = dirs.join("/");
    let folder = base.join(&subfolder);
    std::fs::create_dir_all(&folder).map_err(|e| format!("cannot create {subfolder}: {e}"))?;
    Ok((folder, subfolder, name.clone()))
}

fn outside(base: &Path, prefix: &str) -> String {
    format!(
        "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: {}\n         output_dir: {}",
        base.join(prefix).display(),
        base.display()
    )
}

fn next_counter(folder: &Path, name: &str) -> u32 {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 1;
    };
    let mut best = 0;
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().to_string();
        let Some(rest) = file.strip_prefix(name).and_then(|r| r.strip_prefix('_')) else {
            continue;
        };
        let digits = rest.split('_').next().unwrap_or("");
        if let Ok(n) = digits.parse::<u32>() {
            best = best.max(n);
        }
    }
    best + 1
}
