//! The receipt test corpus: structured purchase records drawn from a seed, rendered
//! as PNG images in DejaVu Sans (bundled) at several levels of degradation. The
//! record is the ground truth the OCR path is measured against.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{GrayImage, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::receipt::{receipt_lines, LineItem, ReceiptRecord, MERCHANTS, STORES};
use crate::NodeError;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// How degraded a rendered receipt is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Straight and sharp.
    Clean,
    /// Rotated by up to ±2.5°.
    MildRotation,
    /// Gaussian blur σ = 1.0.
    MildBlur,
    /// Rotated by up to ±6°, blur σ = 1.6 and 2% speckle noise.
    Strong,
}

impl Level {
    /// Every level, mildest first.
    pub const ALL: [Level; 4] = [
        Level::Clean,
        Level::MildRotation,
        Level::MildBlur,
        Level::Strong,
    ];

    /// The level's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Clean => "clean",
            Level::MildRotation => "mild_rotation",
            Level::MildBlur => "mild_blur",
            Level::Strong => "strong",
        }
    }
}

const DAY_MS: u64 = 86_400_000;

/// `n` receipts drawn from `seed`, each dated within 30 days before `now_ms`.
pub fn generate_receipts(seed: u64, n: usize, now_ms: u64) -> Vec<ReceiptRecord> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| draw_receipt(&mut rng, now_ms)).collect()
}

fn draw_receipt(rng: &mut ChaCha8Rng, now_ms: u64) -> ReceiptRecord {
    let m = &MERCHANTS[rng.gen_range(0..MERCHANTS.len())];
    let (city, country, currency, rate) = STORES[rng.gen_range(0..STORES.len())];
    let n_items = rng.gen_range(1..=4usize);
    let mut items: Vec<LineItem> = Vec::new();
    for _ in 0..n_items {
        let (name, sgd_cents) = m.items[rng.gen_range(0..m.items.len())];
        if items.iter().any(|i| i.name == name) {
            continue;
        }
        let quantity = rng.gen_range(1..=3u32);
        // Unit price in the local currency, rounded to 10 minor units.
        let unit = (sgd_cents * rate / 100).div_ceil(10) * 10;
        items.push(LineItem {
            name: name.to_owned(),
            quantity,
            amount_minor: unit * u64::from(quantity),
        });
    }
    let age_ms = rng.gen_range(0..30 * DAY_MS);
    let time_ms = (now_ms.saturating_sub(age_ms) / 60_000) * 60_000;
    let total_minor = items.iter().map(|i| i.amount_minor).sum();
    ReceiptRecord {
        merchant: m.name.to_owned(),
        category: m.category.to_owned(),
        store_city: city.to_owned(),
        store_country: country.to_owned(),
        time_ms,
        currency: currency.to_owned(),
        items,
        total_minor,
    }
}

const WIDTH_PX: u32 = 640;
const MARGIN_PX: f32 = 40.0;
const LINE_PX: f32 = 44.0;
const SCALE_PX: f32 = 28.0;

fn draw_text(img: &mut GrayImage, font: &FontRef<'_>, text: &str, x0: f32, baseline: f32) {
    let scaled = font.as_scaled(PxScale::from(SCALE_PX));
    let mut x = x0;
    let mut prev = None;
    for ch in text.chars() {
        let id = scaled.glyph_id(ch);
        if let Some(p) = prev {
            x += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(SCALE_PX, ab_glyph::point(x, baseline));
        x += scaled.h_advance(id);
        prev = Some(id);
        if let Some(outline) = font.outline_glyph(glyph) {
            let b = outline.px_bounds();
            outline.draw(|gx, gy, c| {
                let px = b.min.x as i64 + i64::from(gx);
                let py = b.min.y as i64 + i64::from(gy);
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    let p = img.get_pixel_mut(px as u32, py as u32);
                    let ink = (c.clamp(0.0, 1.0) * 255.0) as u8;
                    p.0[0] = p.0[0].saturating_sub(ink);
                }
            });
        }
    }
}

fn text_width(font: &FontRef<'_>, text: &str) -> f32 {
    let scaled = font.as_scaled(PxScale::from(SCALE_PX));
    text.chars()
        .map(|c| scaled.h_advance(scaled.glyph_id(c)))
        .sum()
}

/// Renders a receipt, straight and sharp: one line per field, amounts right-aligned.
pub fn render_clean(r: &ReceiptRecord) -> Result<GrayImage, NodeError> {
    let font = FontRef::try_from_slice(FONT)
        .map_err(|_| NodeError::Io("the bundled DejaVu Sans font does not load".into()))?;
    let lines = receipt_lines(r);
    let height = (2.0 * MARGIN_PX + LINE_PX * lines.len() as f32) as u32;
    let mut img = GrayImage::from_pixel(WIDTH_PX, height, Luma([255]));
    for (i, (left, right)) in lines.iter().enumerate() {
        let baseline = MARGIN_PX + LINE_PX * (i as f32 + 0.7);
        draw_text(&mut img, &font, left, MARGIN_PX, baseline);
        if let Some(amount) = right {
            let x = WIDTH_PX as f32 - MARGIN_PX - text_width(&font, amount);
            draw_text(&mut img, &font, amount, x, baseline);
        }
    }
    Ok(img)
}

/// Rotates by `degrees` about the centre onto a canvas large enough to hold the
/// result, bilinear, white fill.
pub fn rotate(img: &GrayImage, degrees: f32) -> GrayImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (s, c) = degrees.to_radians().sin_cos();
    let out_w = (w * c.abs() + h * s.abs()).ceil() as u32;
    let out_h = (w * s.abs() + h * c.abs()).ceil() as u32;
    let (cx, cy) = (w / 2.0, h / 2.0);
    let (ox, oy) = (out_w as f32 / 2.0, out_h as f32 / 2.0);
    let mut out = GrayImage::from_pixel(out_w, out_h, Luma([255]));
    for y in 0..out_h {
        for x in 0..out_w {
            let dx = x as f32 - ox;
            let dy = y as f32 - oy;
            // Inverse mapping: the source point that lands here.
            let sx = c * dx + s * dy + cx;
            let sy = -s * dx + c * dy + cy;
            out.put_pixel(x, y, Luma([sample(img, sx, sy)]));
        }
    }
    out
}

fn sample(img: &GrayImage, x: f32, y: f32) -> u8 {
    let at = |xi: i64, yi: i64| -> f32 {
        if xi < 0 || yi < 0 || xi >= i64::from(img.width()) || yi >= i64::from(img.height()) {
            255.0
        } else {
            f32::from(img.get_pixel(xi as u32, yi as u32).0[0])
        }
    };
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (xi, yi) = (x0 as i64, y0 as i64);
    let top = at(xi, yi) * (1.0 - fx) + at(xi + 1, yi) * fx;
    let bottom = at(xi, yi + 1) * (1.0 - fx) + at(xi + 1, yi + 1) * fx;
    (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8
}

/// Renders `r` at `level`; the rotation angle and noise are drawn from `seed`.
pub fn render(r: &ReceiptRecord, level: Level, seed: u64) -> Result<GrayImage, NodeError> {
    let clean = render_clean(r)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ca1_ab1e);
    let sign = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
    Ok(match level {
        Level::Clean => clean,
        Level::MildRotation => rotate(&clean, sign * rng.gen_range(1.0..2.5)),
        Level::MildBlur => image::imageops::blur(&clean, 1.0),
        Level::Strong => {
            let mut img =
                image::imageops::blur(&rotate(&clean, sign * rng.gen_range(3.5..6.0)), 1.6);
            for p in img.pixels_mut() {
                if rng.gen_ratio(1, 50) {
                    p.0[0] = if rng.gen_bool(0.5) { 0 } else { 255 };
                }
            }
            img
        }
    })
}

/// PNG bytes of an image.
pub fn png_bytes(img: &GrayImage) -> Result<Vec<u8>, NodeError> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageOutputFormat::Png)
        .map_err(|e| NodeError::Io(format!("PNG encoding: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_are_seeded_and_add_up() {
        let a = generate_receipts(7, 20, 1_795_219_200_000);
        assert_eq!(a, generate_receipts(7, 20, 1_795_219_200_000));
        assert_ne!(a, generate_receipts(8, 20, 1_795_219_200_000));
        for r in &a {
            assert!(!r.items.is_empty());
            assert_eq!(
                r.total_minor,
                r.items.iter().map(|i| i.amount_minor).sum::<u64>()
            );
        }
    }

    #[test]
    fn rendering_puts_ink_on_the_page_and_rotation_keeps_it() {
        let r = &generate_receipts(1, 1, 1_795_219_200_000)[0];
        let img = render_clean(r).unwrap();
        let ink = |i: &GrayImage| i.pixels().filter(|p| p.0[0] < 128).count();
        let clean_ink = ink(&img);
        assert!(clean_ink > 2_000, "{clean_ink}");
        let rotated = render(r, Level::MildRotation, 1).unwrap();
        assert!(rotated.width() > img.width());
        let ratio = ink(&rotated) as f64 / clean_ink as f64;
        assert!((0.9..1.1).contains(&ratio), "{ratio}");
        let png = png_bytes(&img).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
    }
}
