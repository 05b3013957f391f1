//! Small but valid image files: PNG, JPEG, lossless WebP and `.latent` (safetensors).
//!
//! Simulated outputs keep the workflow's aspect ratio but are scaled down (longest side at most
//! `MAX_SIDE`) so hundreds of nodes can write them cheaply. The WebP writer emits the simplest
//! valid VP8L stream (no transforms, every channel coded with fixed 8-bit prefix codes), enough
//! for a client that checks the type or decodes the image.

use std::io::Cursor;

/// Longest side of simulated output files.
pub const MAX_SIDE: u32 = 64;

/// Scales (w, h) down so the longest side is at most `max`.
pub fn scaled(w: u32, h: u32, max: u32) -> (u32, u32) {
    let (w, h) = (w.max(1), h.max(1));
    let longest = w.max(h);
    if longest <= max {
        return (w, h);
    }
    let f = max as f64 / longest as f64;
    (
        ((w as f64 * f).round() as u32).max(1),
        ((h as f64 * f).round() as u32).max(1),
    )
}

/// RGBA pixels of a solid image with a faint diagonal gradient.
pub fn solid_rgba(w: u32, h: u32, color: u32) -> Vec<u8> {
    let (r, g, b) = ((color >> 16) as u8, (color >> 8) as u8, color as u8);
    let mut px = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let d = ((x + y) % 8) as u8;
            px.extend_from_slice(&[r.saturating_add(d), g, b, 255]);
        }
    }
    px
}

/// Encodes RGBA (or RGB when `rgb`) pixels as PNG with optional tEXt chunks.
pub fn png(w: u32, h: u32, rgba: &[u8], rgb: bool, texts: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(if rgb {
            png::ColorType::Rgb
        } else {
            png::ColorType::Rgba
        });
        enc.set_depth(png::BitDepth::Eight);
        for (k, v) in texts {
            let _ = enc.add_text_chunk((*k).to_string(), v.clone());
        }
        let data: Vec<u8> = if rgb {
            rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
        } else {
            rgba.to_vec()
        };
        if let Ok(mut writer) = enc.write_header() {
            let _ = writer.write_image_data(&data);
        }
    }
    out
}

/// Decodes a PNG into (w, h, RGBA), `None` if it is not a PNG this module can read.
pub fn decode_png(bytes: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().ok()?;
    let mut buf = vec![0; reader.output_buffer_size()?];
    let info = reader.next_frame(&mut buf).ok()?;
    let (w, h) = (info.width, info.height);
    let data = &buf[..info.buffer_size()];
    let rgba: Vec<u8> = match info.color_type {
        png::ColorType::Rgba => data.to_vec(),
        png::ColorType::Rgb => data
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::Grayscale => data.iter().flat_map(|g| [*g, *g, *g, 255]).collect(),
        png::ColorType::GrayscaleAlpha => data
            .chunks(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Indexed => return None,
    };
    Some((w, h, rgba))
}

/// Reads width and height from a PNG header without decoding.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

/// Encodes RGBA pixels as a baseline JPEG of the given quality.
pub fn jpeg(w: u32, h: u32, rgba: &[u8], quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let rgb: Vec<u8> = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    let _ = enc.encode(
        &rgb,
        w.min(65535) as u16,
        h.min(65535) as u16,
        jpeg_encoder::ColorType::Rgb,
    );
    out
}

struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= (value as u64) << self.nbits;
        self.nbits += bits;
        while self.nbits >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.nbits -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.bytes
    }
}

// Writes a "normal" prefix code where the first `used` of `alphabet` symbols have length 8 and
// the rest length 0. The code-length code has two symbols (0 and 8), each one bit long.
fn write_fixed8_code(bw: &mut BitWriter, alphabet: usize, used: usize) {
    bw.put(0, 1); // normal code
    // Code-length code lengths in the VP8L order 17,18,0,1,2,3,4,5,16,6,7,8: we send 12 of them.
    bw.put(12 - 4, 4);
    for sym in [17, 18, 0, 1, 2, 3, 4, 5, 16, 6, 7, 8] {
        bw.put(if sym == 0 || sym == 8 { 1 } else { 0 }, 3);
    }
    bw.put(0, 1); // no max_symbol: all code lengths follow
    for i in 0..alphabet {
        // Canonical code: symbol 0 -> bit 0, symbol 8 -> bit 1.
        bw.put(u32::from(i < used), 1);
    }
}

/// Encodes RGBA pixels as a lossless WebP (VP8L) file.
pub fn webp(w: u32, h: u32, rgba: &[u8]) -> Vec<u8> {
    let (w, h) = (w.clamp(1, 16384), h.clamp(1, 16384));
    let mut bw = BitWriter {
        bytes: Vec::new(),
        acc: 0,
        nbits: 0,
    };
    bw.put(0x2f, 8);
    bw.put(w - 1, 14);
    bw.put(h - 1, 14);
    bw.put(1, 1); // alpha used
    bw.put(0, 3); // version
    bw.put(0, 1); // no transform
    bw.put(0, 1); // no color cache
    bw.put(0, 1); // no meta prefix codes
    write_fixed8_code(&mut bw, 256 + 24, 256); // green + length prefixes
    write_fixed8_code(&mut bw, 256, 256); // red
    write_fixed8_code(&mut bw, 256, 256); // blue
    write_fixed8_code(&mut bw, 256, 256); // alpha
    bw.put(1, 1); // distance: simple code
    bw.put(0, 1); // one symbol
    bw.put(0, 1); // 1-bit symbol
    bw.put(0, 1); // symbol 0
    let rev = |v: u8| u32::from(v.reverse_bits());
    for p in rgba.chunks(4).take((w * h) as usize) {
        // Prefix codes are read most significant bit first, so emit each 8-bit code reversed.
        bw.put(rev(p[1]), 8);
        bw.put(rev(p[0]), 8);
        bw.put(rev(p[2]), 8);
        bw.put(rev(p[3]), 8);
    }
    let mut data = bw.finish();
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut out = Vec::with_capacity(data.len() + 20);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((data.len() + 12) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBPVP8L");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// A `.latent` file (safetensors with ComfyUI's format marker) for a latent of the given shape.
pub fn latent(batch: u32, lw: u32, lh: u32) -> Vec<u8> {
    let n = (batch.max(1) * 4 * lw.max(1) * lh.max(1)) as usize;
    let header = format!(
        "{{\"__metadata__\": {{\"format\": \"save_latent_v0.1\"}}, \"latent_tensor\": {{\"dtype\": \"F32\", \"shape\": [{}, 4, {}, {}], \"data_offsets\": [0, {}]}}}}",
        batch.max(1),
        lh.max(1),
        lw.max(1),
        n * 4
    );
    let mut out = Vec::with_capacity(8 + header.len() + n * 4);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + n * 4, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips() {
        let px = solid_rgba(5, 3, 0x112233);
        let bytes = png(5, 3, &px, false, &[("prompt", "{}".into())]);
        assert_eq!(png_size(&bytes), Some((5, 3)));
        let (w, h, back) = decode_png(&bytes).expect("decodes");
        assert_eq!((w, h), (5, 3));
        assert_eq!(back, px);
    }

    #[test]
    fn scaling_keeps_aspect() {
        assert_eq!(scaled(1024, 512, 64), (64, 32));
        assert_eq!(scaled(32, 16, 64), (32, 16));
    }

    #[test]
    fn webp_has_riff_header() {
        let b = webp(2, 2, &solid_rgba(2, 2, 0));
        assert_eq!(&b[..4], b"RIFF");
        assert_eq!(&b[8..16], b"WEBPVP8L");
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
            b.len() - 8
        );
    }
}
