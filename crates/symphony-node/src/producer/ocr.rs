//! OCR inside the Vault enclave's boundary: an uploaded image (PNG, JPEG) or PDF
//! becomes text. The engine is an adapter behind [`Ocr`]; the default is Debian's
//! `tesseract` CLI run as a child process (no network, stdin → stdout), after a
//! deskew in Rust ([`estimate_skew_degrees`]). A PDF with a text layer is read
//! with `pdftotext`; one without (a scan) is rasterised with `pdftoppm` first.

use std::io::Write;
use std::process::{Command, Stdio};

use image::GrayImage;

use super::corpus::{png_bytes, rotate};

/// Why an upload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OcrError {
    /// The bytes are no image or PDF this node reads.
    #[error("the upload is not a PNG, JPEG or PDF ({0})")]
    Format(String),
    /// The OCR engine is missing or failed.
    #[error("OCR engine: {0}")]
    Engine(String),
}

/// An OCR engine: image bytes in, text out.
pub trait Ocr: Send + Sync {
    /// The text of an image (PNG or JPEG bytes).
    fn image_text(&self, image: &[u8]) -> Result<String, OcrError>;
}

/// The kind of an upload, by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadKind {
    /// PNG image.
    Png,
    /// JPEG image.
    Jpeg,
    /// PDF document.
    Pdf,
    /// Anything else: read as structured receipt text.
    Text,
}

/// Classifies upload bytes by their magic bytes.
pub fn upload_kind(bytes: &[u8]) -> UploadKind {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        UploadKind::Png
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        UploadKind::Jpeg
    } else if bytes.starts_with(b"%PDF-") {
        UploadKind::Pdf
    } else {
        UploadKind::Text
    }
}

/// Debian's `tesseract` (5.x) through its CLI, one process per image, single-threaded
/// (the machines are small), English, page segmentation "uniform block of text".
#[derive(Clone, Debug)]
pub struct TesseractCli {
    /// The executable.
    pub program: String,
}

impl Default for TesseractCli {
    fn default() -> Self {
        TesseractCli {
            program: "tesseract".into(),
        }
    }
}

fn run_filter(program: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>, OcrError> {
    let mut child = Command::new(program)
        .args(args)
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            OcrError::Engine(format!(
                "{program} could not be started ({e}); install it (Debian: apt-get install \
                 tesseract-ocr tesseract-ocr-eng poppler-utils)"
            ))
        })?;
    // Write on a thread: a large input must not deadlock against a full stdout pipe.
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| OcrError::Engine(format!("{program}: no stdin")))?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| OcrError::Engine(format!("{program}: {e}")))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(OcrError::Engine(format!(
            "{program} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

impl Ocr for TesseractCli {
    fn image_text(&self, image: &[u8]) -> Result<String, OcrError> {
        let img = image::load_from_memory(image)
            .map_err(|e| OcrError::Format(e.to_string()))?
            .to_luma8();
        let straight = deskew(&img);
        let png = png_bytes(&straight).map_err(|e| OcrError::Format(e.to_string()))?;
        let out = run_filter(
            &self.program,
            &["stdin", "stdout", "-l", "eng", "--psm", "6"],
            &png,
        )?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The text of an upload: OCR for images; a PDF's text layer (`pdftotext`), or OCR
/// of its first page rasterised at 200 dpi (`pdftoppm`) when it has none; UTF-8 text
/// as is.
pub fn upload_text(ocr: &dyn Ocr, bytes: &[u8]) -> Result<String, OcrError> {
    match upload_kind(bytes) {
        UploadKind::Png | UploadKind::Jpeg => ocr.image_text(bytes),
        UploadKind::Pdf => {
            let text = run_filter("pdftotext", &["-layout", "-", "-"], bytes)?;
            let text = String::from_utf8_lossy(&text).into_owned();
            if text.trim().is_empty() {
                let png = run_filter(
                    "pdftoppm",
                    &["-png", "-r", "200", "-f", "1", "-l", "1", "-"],
                    bytes,
                )?;
                ocr.image_text(&png)
            } else {
                // `-layout` keeps columns apart with runs of spaces: collapse them.
                Ok(text
                    .lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
        UploadKind::Text => String::from_utf8(bytes.to_vec())
            .map_err(|_| OcrError::Format("neither an image, a PDF nor UTF-8 text".into())),
    }
}

/// Dark pixels of a downscaled copy (every `step`-th pixel), centred.
fn ink_points(img: &GrayImage, step: u32) -> Vec<(f32, f32)> {
    let (cx, cy) = (img.width() as f32 / 2.0, img.height() as f32 / 2.0);
    let mut pts = Vec::new();
    for y in (0..img.height()).step_by(step as usize) {
        for x in (0..img.width()).step_by(step as usize) {
            if img.get_pixel(x, y).0[0] < 128 {
                pts.push((x as f32 - cx, y as f32 - cy));
            }
        }
    }
    pts
}

/// Projection-profile sharpness of the ink rotated by `degrees`: the sum of squared
/// row counts, largest when text lines are horizontal.
fn profile_score(pts: &[(f32, f32)], degrees: f32, rows: usize) -> u64 {
    let (s, c) = degrees.to_radians().sin_cos();
    let mut hist = vec![0u64; rows];
    let half = rows as f32 / 2.0;
    for &(x, y) in pts {
        let yr = x * s + y * c + half;
        if yr >= 0.0 && (yr as usize) < rows {
            hist[yr as usize] += 1;
        }
    }
    hist.iter().map(|n| n * n).sum()
}

/// The angle the text is rotated by, in degrees (in [`rotate`]'s convention, so
/// `rotate(img, -skew)` straightens it), searched
/// over ±8° at 0.5° then refined at 0.1°.
pub fn estimate_skew_degrees(img: &GrayImage) -> f32 {
    let pts = ink_points(img, 2);
    if pts.len() < 50 {
        return 0.0;
    }
    let rows = (img.width() + img.height()) as usize * 2;
    let best = |from: f32, to: f32, step: f32| -> f32 {
        let mut best = (0u64, 0.0f32);
        let mut a = from;
        while a <= to + 1e-4 {
            let score = profile_score(&pts, a, rows);
            if score > best.0 {
                best = (score, a);
            }
            a += step;
        }
        best.1
    };
    let coarse = best(-8.0, 8.0, 0.5);
    // The best profile angle `a` straightens the text, so the text is rotated by -a.
    -best(coarse - 0.5, coarse + 0.5, 0.1)
}

/// Straightens `img` when its text is skewed by more than 0.2°.
pub fn deskew(img: &GrayImage) -> GrayImage {
    let skew = estimate_skew_degrees(img);
    if skew.abs() < 0.2 {
        img.clone()
    } else {
        rotate(img, -skew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::corpus::{generate_receipts, render_clean};

    #[test]
    fn the_skew_of_a_rotated_receipt_is_found() {
        let r = &generate_receipts(3, 1, 1_795_219_200_000)[0];
        let clean = render_clean(r).unwrap();
        assert!(estimate_skew_degrees(&clean).abs() < 0.25);
        for angle in [-5.0f32, -2.0, 1.5, 4.0] {
            let tilted = rotate(&clean, angle);
            let straight = deskew(&tilted);
            let residual = estimate_skew_degrees(&straight);
            assert!(
                residual.abs() < 0.35,
                "rotated {angle}°, residual after deskew {residual}°"
            );
        }
    }

    #[test]
    fn uploads_are_classified_by_magic_bytes() {
        assert_eq!(upload_kind(b"\x89PNG\r\n\x1a\nrest"), UploadKind::Png);
        assert_eq!(upload_kind(b"%PDF-1.4"), UploadKind::Pdf);
        assert_eq!(upload_kind(b"merchant: x"), UploadKind::Text);
        let e = upload_text(&TesseractCli::default(), &[0xff, 0xfe, 0x00]).unwrap_err();
        assert!(matches!(e, OcrError::Format(_)), "{e}");
    }
}
