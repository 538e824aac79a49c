//! The market vocabulary of catalog v1: the brands the commerce domain knows and the
//! ISO 3166-1 alpha-2 country codes. Specs are checked against it before anything
//! is reserved or charged, so a misspelled brand or a country name instead of its
//! code is refused with the field, the value and the nearest known value — instead
//! of an audience of 0 that spends budget and a base fee.

/// Brands of the commerce domain in catalog v1 (as purchases name them).
pub const BRANDS_V1: &[&str] = &[
    "Luckin Coffee",
    "Starbucks",
    "The Coffee Bean & Tea Leaf",
    "Toast Box",
    "Ya Kun Kaya Toast",
    "Cotti Coffee",
    "Tim Hortons",
    "FairPrice",
    "7-Eleven",
    "Uniqlo",
    "McDonald's",
    "GrabFood",
];

/// ISO 3166-1 alpha-2 codes (officially assigned).
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Country names users type instead of the code (markets of the reference data).
const COUNTRY_NAMES: &[(&str, &str)] = &[
    ("singapore", "SG"),
    ("malaysia", "MY"),
    ("china", "CN"),
    ("hong kong", "HK"),
    ("thailand", "TH"),
    ("indonesia", "ID"),
    ("japan", "JP"),
    ("united states", "US"),
    ("united kingdom", "GB"),
    ("australia", "AU"),
];

/// A spec value outside the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} is not known to the semantic registry{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct VocabularyError {
    /// The spec field.
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// A suggestion.
    pub hint: Option<String>,
}

/// Levenshtein distance over chars (short strings only).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The brand as the catalog spells it, or an error with the nearest known brand.
pub fn check_brand(field: &'static str, brand: &str) -> Result<&'static str, VocabularyError> {
    if let Some(b) = BRANDS_V1.iter().find(|b| **b == brand) {
        return Ok(b);
    }
    let lower = brand.trim().to_lowercase();
    let nearest = BRANDS_V1
        .iter()
        .min_by_key(|b| distance(&b.to_lowercase(), &lower))
        .filter(|b| distance(&b.to_lowercase(), &lower) <= 3.max(lower.len() / 4));
    Err(VocabularyError {
        field,
        value: brand.to_owned(),
        hint: Some(match nearest {
            Some(b) => format!("did you mean {b:?}?"),
            None => format!("known brands: {}", BRANDS_V1.join(", ")),
        }),
    })
}

/// An ISO 3166-1 alpha-2 code, or an error naming the code a country name means.
pub fn check_country(field: &'static str, code: &str) -> Result<(), VocabularyError> {
    if code.len() == 2 && ISO_3166_ALPHA2.split(' ').any(|c| c == code) {
        return Ok(());
    }
    let lower = code.trim().to_lowercase();
    let hint = COUNTRY_NAMES
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, c)| format!("use the ISO 3166-1 alpha-2 code {c:?}"))
        .or_else(|| {
            let upper = code.trim().to_uppercase();
            (upper.len() == 2 && ISO_3166_ALPHA2.split(' ').any(|c| c == upper))
                .then(|| format!("codes are upper case: {upper:?}"))
        })
        .unwrap_or_else(|| "expected an ISO 3166-1 alpha-2 code such as \"SG\"".into());
    Err(VocabularyError {
        field,
        value: code.to_owned(),
        hint: Some(hint),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspellings_are_refused_with_the_nearest_value() {
        assert_eq!(
            check_brand("brand", "Luckin Coffee").unwrap(),
            "Luckin Coffee"
        );
        let e = check_brand("brand", "Luckin Cofee").unwrap_err();
        assert!(
            e.to_string().contains("did you mean \"Luckin Coffee\""),
            "{e}"
        );
        let e = check_brand("brand", "Zzyzx Burgers").unwrap_err();
        assert!(e.to_string().contains("known brands: Luckin Coffee"), "{e}");
        assert!(check_country("country", "SG").is_ok());
        let e = check_country("country", "Singapore").unwrap_err();
        assert!(e.to_string().contains("code \"SG\""), "{e}");
        let e = check_country("country", "sg").unwrap_err();
        assert!(e.to_string().contains("upper case"), "{e}");
        assert!(check_country("country", "XX").is_err());
    }
}
