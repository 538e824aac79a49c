//! The OCR path against the seeded receipt corpus: rendered receipts (the records
//! are the ground truth) read back through Debian's tesseract and the receipt
//! parser. Needs `tesseract` on the PATH (`.ci/run` installs it).

use symphony_node::producer::bench::bench_parse;
use symphony_node::producer::corpus::{generate_receipts, png_bytes, render, Level};
use symphony_node::producer::ocr::{upload_text, TesseractCli};
use symphony_node::producer::receipt::parse_receipt_text;

const NOW_MS: u64 = 1_795_219_200_000;

#[test]
fn clean_and_mild_receipts_are_read_with_at_least_98_percent_field_accuracy() {
    let reports = bench_parse(
        &TesseractCli::default(),
        11,
        8,
        NOW_MS,
        &[Level::Clean, Level::MildRotation, Level::MildBlur],
    )
    .unwrap();
    for r in &reports {
        assert!(
            r.field_accuracy >= 0.98,
            "{:?}: accuracy {} ({} of {} parsed) errors {:?}",
            r.level,
            r.field_accuracy,
            r.parsed,
            r.receipts,
            r.errors
        );
    }
}

#[test]
fn a_receipt_image_is_read_back_to_its_record() {
    let truth = &generate_receipts(5, 1, NOW_MS)[0];
    let png = png_bytes(&render(truth, Level::MildRotation, 5).unwrap()).unwrap();
    let text = upload_text(&TesseractCli::default(), &png).unwrap();
    let record = parse_receipt_text(&text).unwrap();
    assert_eq!(&record, truth, "OCR text was:\n{text}");
}

#[test]
fn an_image_without_a_receipt_is_refused_naming_what_is_missing() {
    let blank = image::GrayImage::from_pixel(300, 200, image::Luma([255]));
    let png = png_bytes(&blank).unwrap();
    let text = upload_text(&TesseractCli::default(), &png).unwrap();
    let e = parse_receipt_text(&text).unwrap_err();
    assert!(e.to_string().contains("receipt") || e.to_string().contains("store"), "{e}");
}
