//! The purchase record a receipt carries, and the parser of a receipt's text (what
//! OCR read) into it. The parser is pure: text in, record or a named error out.
//!
//! A receipt's text, one item per line (blank lines ignored, the order of the
//! header lines free):
//!
//! ```text
//! Luckin Coffee
//! Singapore, SG
//! 2026-11-20 08:30
//! 2 x Latte 11.80
//! 1 x Americano 5.90
//! TOTAL SGD 17.70
//! ```
//!
//! The merchant is the first line, matched against the known merchants (a small
//! edit distance absorbs OCR slips; an unknown merchant keeps its text and the
//! category `other`). Items must add up to the total.

use serde::{Deserialize, Serialize};
use symphony_vault::record::Purchase;

use crate::classes::parse::ReceiptError;

/// A known merchant: name, category, where it trades and what it sells.
#[derive(Clone, Copy, Debug)]
pub struct Merchant {
    /// Brand as printed.
    pub name: &'static str,
    /// Merchant category (the `commerce` domain's `category`).
    pub category: &'static str,
    /// Items and unit prices in SGD cents (scaled by the currency's rate).
    pub items: &'static [(&'static str, u64)],
}

/// The merchants the parser knows by name (the data generator's brands).
pub const MERCHANTS: &[Merchant] = &[
    Merchant {
        name: "Luckin Coffee",
        category: "coffee",
        items: &[
            ("Americano", 390),
            ("Latte", 450),
            ("Coconut Latte", 520),
            ("Mocha", 480),
        ],
    },
    Merchant {
        name: "Starbucks",
        category: "coffee",
        items: &[
            ("Caffe Latte", 690),
            ("Cappuccino", 650),
            ("Cold Brew", 720),
            ("Croissant", 450),
        ],
    },
    Merchant {
        name: "Toast Box",
        category: "coffee",
        items: &[("Kaya Toast", 280), ("Kopi", 180), ("Teh Tarik", 200)],
    },
    Merchant {
        name: "Cotti Coffee",
        category: "coffee",
        items: &[("Americano", 300), ("Latte", 380), ("Flat White", 420)],
    },
    Merchant {
        name: "FairPrice",
        category: "grocery",
        items: &[
            ("Milk 1L", 345),
            ("Bread", 260),
            ("Eggs 10pcs", 420),
            ("Rice 5kg", 1390),
            ("Bananas", 295),
        ],
    },
    Merchant {
        name: "7-Eleven",
        category: "convenience",
        items: &[
            ("Water", 120),
            ("Sandwich", 390),
            ("Chips", 250),
            ("Iced Tea", 210),
        ],
    },
];

/// Store cities, their country and currency (the generator's cities).
pub const STORES: &[(&str, &str, &str, u64)] = &[
    // (city, ISO 3166-1 alpha-2, ISO 4217, price rate in percent of SGD)
    ("Singapore", "SG", "SGD", 100),
    ("Kuala Lumpur", "MY", "MYR", 340),
    ("Shanghai", "CN", "CNY", 530),
    ("Hong Kong", "HK", "HKD", 580),
    ("Bangkok", "TH", "THB", 2600),
];

/// One line item (the Vault's record type: stored with the receipt).
pub use symphony_vault::record::LineItem;

/// A structured purchase record: what a receipt says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    /// Merchant brand.
    pub merchant: String,
    /// Merchant category (`other` when the merchant is not known).
    pub category: String,
    /// Store city.
    pub store_city: String,
    /// Store country, ISO 3166-1 alpha-2.
    pub store_country: String,
    /// Purchase time, ms since the Unix epoch (UTC, minute precision).
    pub time_ms: u64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Line items.
    pub items: Vec<LineItem>,
    /// Total in minor units.
    pub total_minor: u64,
}

impl ReceiptRecord {
    /// The Vault's purchase record of this receipt.
    pub fn to_purchase(&self) -> Purchase {
        Purchase {
            brand: self.merchant.clone(),
            category: self.category.clone(),
            amount_minor: self.total_minor,
            currency: self.currency.clone(),
            ts_ms: self.time_ms,
            store_city: self.store_city.clone(),
            store_country: self.store_country.clone(),
        }
    }

    /// The Vault's record of this receipt: the purchase with its line items.
    pub fn to_receipt(&self) -> symphony_vault::record::Receipt {
        symphony_vault::record::Receipt {
            purchase: self.to_purchase(),
            items: self.items.clone(),
        }
    }

    /// The fields compared against a ground truth: 6 header fields and 3 per item.
    pub fn field_count(&self) -> usize {
        6 + 3 * self.items.len()
    }

    /// How many of `truth`'s fields this record has right (items by position).
    pub fn fields_matching(&self, truth: &ReceiptRecord) -> usize {
        let header = [
            self.merchant == truth.merchant,
            self.store_city == truth.store_city,
            self.store_country == truth.store_country,
            self.time_ms == truth.time_ms,
            self.currency == truth.currency,
            self.total_minor == truth.total_minor,
        ];
        let items: usize = truth
            .items
            .iter()
            .zip(&self.items)
            .map(|(t, s)| {
                usize::from(t.name == s.name)
                    + usize::from(t.quantity == s.quantity)
                    + usize::from(t.amount_minor == s.amount_minor)
            })
            .sum();
        header.iter().filter(|b| **b).count() + items
    }
}

/// Formats minor units as `12.50`.
pub fn format_amount(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// Formats ms since the Unix epoch as `YYYY-MM-DD HH:MM` (UTC).
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3_600,
        (rem % 3_600) / 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The lines of a receipt as rendered (the ground truth's text).
pub fn receipt_lines(r: &ReceiptRecord) -> Vec<(String, Option<String>)> {
    let mut out = vec![
        (r.merchant.clone(), None),
        (format!("{}, {}", r.store_city, r.store_country), None),
        (format_time(r.time_ms), None),
    ];
    for it in &r.items {
        out.push((
            format!("{} x {}", it.quantity, it.name),
            Some(format_amount(it.amount_minor)),
        ));
    }
    out.push((
        format!("TOTAL {}", r.currency),
        Some(format_amount(r.total_minor)),
    ));
    out
}

fn err(line: usize, field: &str, reason: impl Into<String>) -> ReceiptError {
    ReceiptError {
        line,
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Levenshtein distance over chars, for OCR slips in names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The nearest of `names` to `text` if within a fifth of its length.
fn nearest<'a>(text: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = text.to_lowercase();
    names
        .map(|n| (edit_distance(&lower, &n.to_lowercase()), n))
        .filter(|(d, n)| *d <= (n.chars().count() / 5).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// An amount `12.50` read by OCR: common digit slips (O→0, l/I→1) repaired.
fn ocr_amount(token: &str) -> Option<u64> {
    let t: String = token
        .chars()
        .map(|c| match c {
            'O' | 'o' => '0',
            'l' | 'I' | '|' => '1',
            ',' => '.',
            c => c,
        })
        .collect();
    let (whole, frac) = t.split_once('.')?;
    if whole.is_empty()
        || frac.len() != 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac.parse().ok()?)
}

fn parse_clock(s: &str) -> Option<u64> {
    let cleaned: String = s
        .chars()
        .map(|c| match c {
            'O' | 'o' => '0',
            'l' | 'I' => '1',
            c => c,
        })
        .collect();
    let (date, clock) = cleaned.split_once(' ')?;
    let d: Vec<&str> = date.split('-').collect();
    let c: Vec<&str> = clock.trim().split(':').collect();
    if d.len() != 3 || c.len() != 2 {
        return None;
    }
    let n = |x: &str, len: usize| -> Option<i64> {
        (x.len() == len && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    let (y, m, day, h, min) = (
        n(d[0], 4)?,
        n(d[1], 2)?,
        n(d[2], 2)?,
        n(c[0], 2)?,
        n(c[1], 2)?,
    );
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || h > 23
        || min > 59
    {
        return None;
    }
    // Round trip rejects 02-30 and the like.
    let days = days_from_civil(y, m, day);
    if civil_from_days(days) != (y, m, day) {
        return None;
    }
    u64::try_from((days * 86_400 + h * 3_600 + min * 60) * 1_000).ok()
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2 x Latte 11.80` → item; `None` when the line is not an item line.
fn parse_item(line: &str) -> Option<LineItem> {
    let (head, amount) = line.rsplit_once(' ')?;
    let amount_minor = ocr_amount(amount.trim())?;
    // `2 x Name`, also read as `2x Name` or `2 xName`.
    let head = head.trim();
    let digits_end = head
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || matches!(c, 'l' | 'I' | 'O' | 'o')))
        .map_or(head.len(), |(i, _)| i);
    let (qty, rest) = head.split_at(digits_end);
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix('x')
        .or_else(|| rest.strip_prefix('X'))
        .or_else(|| rest.strip_prefix('×'))?;
    if qty.is_empty() {
        return None;
    }
    let quantity: u32 = qty
        .replace(['l', 'I'], "1")
        .replace(['O', 'o'], "0")
        .parse()
        .ok()?;
    let words = rest.split_whitespace();
    let name = words.collect::<Vec<_>>().join(" ");
    if name.is_empty() || quantity == 0 {
        return None;
    }
    Some(LineItem {
        name,
        quantity,
        amount_minor,
    })
}

/// Parses a receipt's text into a [`ReceiptRecord`]. Every missing or malformed
/// field is an error naming it (and the line, when there is one); items that do not
/// add up to the total are refused.
pub fn parse_receipt_text(text: &str) -> Result<ReceiptRecord, ReceiptError> {
    parse_receipt_text_counted(text).map(|(r, _, _)| r)
}

/// [`parse_receipt_text`], with the number of non-blank lines read and of those
/// recognised (the parsability of the quality score).
pub fn parse_receipt_text_counted(text: &str) -> Result<(ReceiptRecord, u32, u32), ReceiptError> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let (_, first) = lines
        .first()
        .copied()
        .ok_or_else(|| err(0, "receipt", "no text was read"))?;
    let (merchant, category) = match nearest(first, MERCHANTS.iter().map(|m| m.name)) {
        Some(name) => {
            let category = MERCHANTS
                .iter()
                .find(|m| m.name == name)
                .map_or("other", |m| m.category);
            (name.to_owned(), category.to_owned())
        }
        None => (first.to_owned(), "other".to_owned()),
    };
    let mut store = None;
    let mut time = None;
    let mut items = Vec::new();
    let mut total = None;
    let mut recognized = 1u32;
    for &(n, l) in &lines[1..] {
        recognized += 1;
        let upper = l.to_uppercase();
        if upper.starts_with("TOTAL") || upper.starts_with("T0TAL") {
            let parts: Vec<&str> = l.split_whitespace().collect();
            let (Some(cur), Some(amount)) = (parts.get(1), parts.last()) else {
                return Err(err(n, "total", format!("{l:?} is not `TOTAL CUR 0.00`")));
            };
            let amount = ocr_amount(amount)
                .ok_or_else(|| err(n, "total", format!("{amount:?} is not an amount")))?;
            let cur = cur.replace('0', "O");
            if cur.len() != 3 || !cur.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(err(
                    n,
                    "currency",
                    format!("{cur:?} is not a 3-letter code"),
                ));
            }
            total = Some((n, cur, amount));
        } else if let Some(t) = parse_clock(l) {
            time = Some(t);
        } else if let Some(item) = parse_item(l) {
            items.push(item);
        } else if let Some((city, country)) = l.rsplit_once(',') {
            let country = country.trim().replace('0', "O");
            if country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()) {
                let city = nearest(city.trim(), STORES.iter().map(|s| s.0))
                    .map_or_else(|| city.trim().to_owned(), str::to_owned);
                store = Some((city, country));
            } else {
                recognized -= 1;
            }
        } else {
            recognized -= 1;
        }
    }
    let (store_city, store_country) =
        store.ok_or_else(|| err(0, "store", "no `City, CC` line was read"))?;
    let time_ms = time.ok_or_else(|| err(0, "time", "no `YYYY-MM-DD HH:MM` line was read"))?;
    let (total_line, currency, total_minor) =
        total.ok_or_else(|| err(0, "total", "no `TOTAL CUR 0.00` line was read"))?;
    if items.is_empty() {
        return Err(err(0, "items", "no `N x ITEM 0.00` line was read"));
    }
    let sum = items
        .iter()
        .try_fold(0u64, |acc, it| acc.checked_add(it.amount_minor))
        .ok_or_else(|| err(total_line, "items", "the items' sum overflows"))?;
    if sum != total_minor {
        return Err(err(
            total_line,
            "total",
            format!(
                "the items add up to {}, the total says {}",
                format_amount(sum),
                format_amount(total_minor)
            ),
        ));
    }
    let record = ReceiptRecord {
        merchant,
        category,
        store_city,
        store_country,
        time_ms,
        currency,
        items,
        total_minor,
    };
    let read = u32::try_from(lines.len()).unwrap_or(u32::MAX);
    Ok((record, read, recognized))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReceiptRecord {
        ReceiptRecord {
            merchant: "Luckin Coffee".into(),
            category: "coffee".into(),
            store_city: "Singapore".into(),
            store_country: "SG".into(),
            time_ms: 1_795_163_400_000,
            currency: "SGD".into(),
            items: vec![
                LineItem {
                    name: "Latte".into(),
                    quantity: 2,
                    amount_minor: 1180,
                },
                LineItem {
                    name: "Americano".into(),
                    quantity: 1,
                    amount_minor: 590,
                },
            ],
            total_minor: 1770,
        }
    }

    fn text(r: &ReceiptRecord) -> String {
        receipt_lines(r)
            .into_iter()
            .map(|(l, a)| match a {
                Some(a) => format!("{l} {a}\n"),
                None => format!("{l}\n"),
            })
            .collect()
    }

    #[test]
    fn rendered_text_parses_back_to_the_record() {
        let r = sample();
        assert_eq!(format_time(r.time_ms), "2026-11-20 08:30");
        let parsed = parse_receipt_text(&text(&r)).unwrap();
        assert_eq!(parsed, r);
        assert_eq!(parsed.fields_matching(&r), r.field_count());
    }

    #[test]
    fn ocr_slips_are_absorbed() {
        let t = text(&sample())
            .replace("Luckin Coffee", "Luckln Coffee")
            .replace("17.70", "17.7O")
            .replace("Singapore", "Singapcre")
            .replace("2 x Latte", "2x Latte");
        let parsed = parse_receipt_text(&t).unwrap();
        assert_eq!(parsed, sample());
    }

    #[test]
    fn bad_receipts_are_refused_naming_the_field() {
        let good = text(&sample());
        let cases = [
            (good.replace("TOTAL SGD 17.70", "TOTAL SGD 18.70"), "total"),
            (good.replace("2026-11-20 08:30\n", ""), "time"),
            (good.replace("Singapore, SG\n", ""), "store"),
            (good.replace("TOTAL SGD 17.70\n", ""), "total"),
            (String::new(), "receipt"),
            ("hello\nworld\n".into(), "store"),
        ];
        for (t, field) in cases {
            let e = parse_receipt_text(&t).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let e = parse_receipt_text(&good.replace("TOTAL SGD 17.70", "TOTAL SGD 18.70"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("add up to 17.70"), "{e}");
    }
}
