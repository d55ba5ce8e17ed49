//! Disk sizes written the way people write them: `2GiB`, `512M`, `4G`, or plain bytes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

/// A disk size that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` is not a size; write it like 2GiB, 512MiB or 4G")]
    NotASize(String),
    #[error("`{text}`: unknown size unit `{unit}`; use KiB, MiB, GiB or TiB")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
}

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn parse(text: &str) -> Result<Size, SizeError> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| SizeError::NotASize(text.to_string()))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" | "k" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            other => {
                return Err(SizeError::UnknownUnit {
                    text: text.to_string(),
                    unit: other.to_string(),
                })
            }
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| SizeError::TooLarge(text.to_string()))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if b != 0 && b.is_multiple_of(1u64 << shift) {
                return write!(f, "{}{unit}", b >> shift);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(t) => Size::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_round_trips() {
        assert_eq!(Size::parse("2GiB").unwrap().bytes(), 2 << 30);
        assert_eq!(Size::parse("2G").unwrap().bytes(), 2 << 30);
        assert_eq!(Size::parse("512MiB").unwrap().bytes(), 512 << 20);
        assert_eq!(Size::parse("4096").unwrap().bytes(), 4096);
        assert_eq!(Size::parse("2GiB").unwrap().to_string(), "2GiB");
        assert_eq!(Size(1536 << 20).to_string(), "1536MiB");
    }

    #[test]
    fn rejects_nonsense() {
        assert!(Size::parse("lots").is_err());
        assert!(Size::parse("2 parsecs")
            .unwrap_err()
            .to_string()
            .contains("unknown size unit"));
        assert!(Size::parse("99999999999T").is_err());
    }
}
