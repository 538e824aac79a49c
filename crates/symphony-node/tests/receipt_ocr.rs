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
    assert!(
        e.to_string().contains("receipt") || e.to_string().contains("store"),
        "{e}"
    );
}

/// A one-page PDF whose text layer holds `lines` (Helvetica, 12 pt), with a
/// correct cross-reference table.
fn text_pdf(lines: &[String]) -> Vec<u8> {
    let mut content = String::from("BT /F1 12 Tf 50 780 Td 16 TL\n");
    for l in lines {
        let escaped = l
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        content.push_str(&format!("({escaped}) Tj T*\n"));
    }
    content.push_str("ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[test]
fn a_pdf_receipt_with_a_text_layer_is_read_without_ocr() {
    use symphony_node::producer::receipt::receipt_lines;
    let truth = &generate_receipts(9, 1, NOW_MS)[0];
    let lines: Vec<String> = receipt_lines(truth)
        .into_iter()
        .map(|(l, a)| match a {
            Some(a) => format!("{l}    {a}"),
            None => l,
        })
        .collect();
    let pdf = text_pdf(&lines);
    let text = upload_text(&TesseractCli::default(), &pdf).unwrap();
    assert_eq!(
        &parse_receipt_text(&text).unwrap(),
        truth,
        "pdftotext gave:\n{text}"
    );
}
