//! Record types of the scenario domains and the plaintext layout of a block.
//!
//! A block's plaintext is the BCS encoding of `Vec<Record>`. Strings are decoded
//! borrowed from the decrypted buffer ([`RecordRef`]), so a scan allocates one
//! buffer per block, not one per string.

use serde::{Deserialize, Serialize};

/// A purchase (domain `commerce`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Purchase {
    /// Merchant brand, e.g. "Luckin Coffee".
    pub brand: String,
    /// Merchant category, e.g. "coffee".
    pub category: String,
    /// Amount in the currency's minor units (cents).
    pub amount_minor: u64,
    /// ISO 4217 currency code, e.g. "SGD".
    pub currency: String,
    /// Purchase time, ms since the Unix epoch.
    pub ts_ms: u64,
    /// City of the store.
    pub store_city: String,
    /// ISO 3166-1 alpha-2 country of the store.
    pub store_country: String,
}

/// One line item of a receipt.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LineItem {
    /// Item name as printed.
    pub name: String,
    /// Quantity.
    pub quantity: u32,
    /// Line amount (quantity × unit price) in minor units.
    pub amount_minor: u64,
}

/// A parsed receipt (domain `commerce`): the purchase and its line items. Scans
/// see its purchase like any other; the items stay with it in the Vault.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// The purchase (its amount is the receipt's total).
    pub purchase: Purchase,
    /// Line items, as printed; their amounts add up to the total.
    pub items: Vec<LineItem>,
}

/// The subject's home location (domain `geography`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Geography {
    /// Home city.
    pub home_city: String,
    /// ISO 3166-1 alpha-2 home country.
    pub home_country: String,
}

/// How a subject can be reached (domain `identity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    /// An E.164 phone number.
    Phone,
    /// An e-mail address.
    Email,
}

/// A coupon-targetable contact handle (domain `identity`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Phone or e-mail.
    pub contact_kind: ContactKind,
    /// The handle itself; the same person has the same handle in every Vault.
    pub contact: String,
}

/// One protected record of a subject.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Record {
    /// Domain `identity`.
    Identity(Identity),
    /// Domain `geography`.
    Geography(Geography),
    /// Domain `commerce`.
    Purchase(Purchase),
    /// Domain `commerce`: a parsed receipt with its line items (appended last: the
    /// encodings of the other variants are unchanged).
    Receipt(Receipt),
}

/// A purchase borrowed from a decrypted block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRef<'a> {
    /// Merchant brand.
    pub brand: &'a str,
    /// Merchant category.
    pub category: &'a str,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 currency.
    pub currency: &'a str,
    /// ms since the Unix epoch.
    pub ts_ms: u64,
    /// Store city.
    pub store_city: &'a str,
    /// Store country.
    pub store_country: &'a str,
}

/// Home location borrowed from a decrypted block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeographyRef<'a> {
    /// Home city.
    pub home_city: &'a str,
    /// Home country.
    pub home_country: &'a str,
}

/// Contact handle borrowed from a decrypted block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRef<'a> {
    /// Phone or e-mail.
    pub contact_kind: ContactKind,
    /// The handle.
    pub contact: &'a str,
}

/// A line item borrowed from a decrypted block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItemRef<'a> {
    /// Item name.
    pub name: &'a str,
    /// Quantity.
    pub quantity: u32,
    /// Line amount in minor units.
    pub amount_minor: u64,
}

/// A parsed receipt borrowed from a decrypted block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRef<'a> {
    /// The purchase.
    #[serde(borrow)]
    pub purchase: PurchaseRef<'a>,
    /// Line items.
    #[serde(borrow)]
    pub items: Vec<LineItemRef<'a>>,
}

/// A record borrowed from a decrypted block (same BCS layout as [`Record`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordRef<'a> {
    /// Domain `identity`.
    #[serde(borrow)]
    Identity(IdentityRef<'a>),
    /// Domain `geography`.
    #[serde(borrow)]
    Geography(GeographyRef<'a>),
    /// Domain `commerce`.
    #[serde(borrow)]
    Purchase(PurchaseRef<'a>),
    /// Domain `commerce`: a parsed receipt.
    #[serde(borrow)]
    Receipt(ReceiptRef<'a>),
}

impl PurchaseRef<'_> {
    /// An owned copy.
    pub fn to_owned_purchase(&self) -> Purchase {
        Purchase {
            brand: self.brand.to_owned(),
            category: self.category.to_owned(),
            amount_minor: self.amount_minor,
            currency: self.currency.to_owned(),
            ts_ms: self.ts_ms,
            store_city: self.store_city.to_owned(),
            store_country: self.store_country.to_owned(),
        }
    }
}

impl RecordRef<'_> {
    /// An owned copy.
    pub fn to_owned_record(&self) -> Record {
        match self {
            RecordRef::Identity(i) => Record::Identity(Identity {
                contact_kind: i.contact_kind,
                contact: i.contact.to_owned(),
            }),
            RecordRef::Geography(g) => Record::Geography(Geography {
                home_city: g.home_city.to_owned(),
                home_country: g.home_country.to_owned(),
            }),
            RecordRef::Purchase(p) => Record::Purchase(p.to_owned_purchase()),
            RecordRef::Receipt(r) => Record::Receipt(Receipt {
                purchase: r.purchase.to_owned_purchase(),
                items: r
                    .items
                    .iter()
                    .map(|i| LineItem {
                        name: i.name.to_owned(),
                        quantity: i.quantity,
                        amount_minor: i.amount_minor,
                    })
                    .collect(),
            }),
        }
    }
}

/// Everything the Vault holds about one subject, decrypted, as a scan sees it.
///
/// `identity` and `geography` are the latest imported values.
#[derive(Debug)]
pub struct SubjectView<'a> {
    /// The subject.
    pub subject: &'a str,
    /// Contact handle, if imported.
    pub identity: Option<IdentityRef<'a>>,
    /// Home location, if imported.
    pub geography: Option<GeographyRef<'a>>,
    /// Purchases in import order (a parsed receipt's purchase among them).
    pub purchases: &'a [PurchaseRef<'a>],
}
