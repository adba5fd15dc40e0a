//! HPACK (RFC 7541): header blocks in and out.
//!
//! Decoding keeps the peer's dynamic table, held to the protocol's default size of 4,096
//! bytes: we never announce a larger one, so a peer's size update beyond it is an error rather
//! than memory it makes us keep. Encoding is stateless: literals without indexing (the static
//! table's entry or name where there is one, no Huffman). Our blocks are a few per stream, off
//! the hot path, so a dynamic table would buy a few bytes for state on both ends.

use std::collections::VecDeque;

use bytes::Bytes;

use super::huffman;

/// The dynamic table size both ends start with and we keep (SETTINGS_HEADER_TABLE_SIZE).
pub(crate) const TABLE_SIZE: usize = 4096;
/// What RFC 9113 §6.5.2 (and RFC 7541 §4.1, for the table) counts per field beside its name
/// and value.
pub(crate) const FIELD_OVERHEAD: usize = 32;

/// Why a header block was not accepted.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HpackError {
    /// Decodable, but its fields add up to more than the limit: a stream error (431 or
    /// RST_STREAM); the connection goes on, its table in step.
    #[error("the header list is larger than {0} bytes")]
    TooLarge(usize),
    /// Not valid HPACK: the tables of the two ends may differ now, so this is a connection
    /// error (COMPRESSION_ERROR).
    #[error("a malformed header block")]
    Malformed,
}

/// The decoding end of one connection: the peer's dynamic table.
#[derive(Default)]
pub(crate) struct Decoder {
    /// Newest first: index 62 is the front.
    table: VecDeque<(Bytes, Bytes)>,
    /// The table's size as RFC 7541 §4.1 counts it.
    size: usize,
    /// Its current maximum (the peer may lower it below `TABLE_SIZE`).
    max: usize,
}

/// One field representation's first byte, by its pattern (RFC 7541 §6).
enum Field {
    /// 1xxxxxxx: a table entry.
    Indexed,
    /// 01xxxxxx: a literal the table keeps.
    Incremental,
    /// 001xxxxx: the table's new maximum size.
    SizeUpdate,
    /// 0000xxxx or 0001xxxx: a literal the table does not keep.
    Literal,
}

impl Field {
    fn of(byte: u8) -> Field {
        match byte {
            0x80.. => Field::Indexed,
            0x40.. => Field::Incremental,
            0x20.. => Field::SizeUpdate,
            _ => Field::Literal,
        }
    }
}

/// A cursor over one header block.
struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Result<u8, HpackError> {
        let b = *self.bytes.get(self.at).ok_or(HpackError::Malformed)?;
        self.at += 1;
        Ok(b)
    }

    /// An integer with a `prefix`-bit prefix (RFC 7541 §5.1), at most 2^21: larger ones
    /// name nothing a block this size could hold.
    fn integer(&mut self, prefix: u32) -> Result<usize, HpackError> {
        let mask = (1usize << prefix) - 1;
        let mut value = usize::from(self.byte()?) & mask;
        if value < mask {
            return Ok(value);
        }
        for shift in [0, 7, 14] {
            let b = self.byte()?;
            value += usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(HpackError::Malformed)
    }

    /// A string literal (RFC 7541 §5.2), Huffman-coded or not.
    fn string(&mut self) -> Result<Bytes, HpackError> {
        let huffman = self.bytes.get(self.at).ok_or(HpackError::Malformed)? & 0x80 != 0;
        let len = self.integer(7)?;
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len()).ok_or(HpackError::Malformed)?;
        let raw = &self.bytes[self.at..end];
        self.at = end;
        if !huffman {
            return Ok(Bytes::copy_from_slice(raw));
        }
        let mut out = Vec::with_capacity(raw.len() * 8 / 5);
        huffman::decode(raw, &mut out).map_err(|_| HpackError::Malformed)?;
        Ok(Bytes::from(out))
    }
}

impl Decoder {
    pub(crate) fn new() -> Decoder {
        Decoder { table: VecDeque::new(), size: 0, max: TABLE_SIZE }
    }

    /// Decodes one complete header block (a HEADERS fragment and its CONTINUATIONs,
    /// concatenated). The whole block is decoded even past `max_list` bytes (name + value +
    /// 32 per field), so that the table stays in step with the peer's.
    pub(crate) fn decode(&mut self, block: &[u8], max_list: usize) -> Result<Vec<(Bytes, Bytes)>, HpackError> {
        let mut input = Input { bytes: block, at: 0 };
        let (mut fields, mut size, mut any_field) = (Vec::new(), 0usize, false);
        while input.at < block.len() {
            let field = match Field::of(block[input.at]) {
                Field::SizeUpdate => {
                    // Only before the block's first field (RFC 7541 §4.2).
                    let max = input.integer(5)?;
                    if any_field || max > TABLE_SIZE {
                        return Err(HpackError::Malformed);
                    }
                    self.max = max;
                    self.evict(0);
                    continue;
                }
                Field::Indexed => {
                    let index = input.integer(7)?;
                    self.entry(index)?
                }
                Field::Incremental => {
                    let field = self.literal(&mut input, 6)?;
                    self.insert(field.clone());
                    field
                }
                Field::Literal => self.literal(&mut input, 4)?,
            };
            any_field = true;
            size = size.saturating_add(field.0.len() + field.1.len() + FIELD_OVERHEAD);
            if size <= max_list {
                fields.push(field);
            }
        }
        match size <= max_list {
            true => Ok(fields),
            false => Err(HpackError::TooLarge(max_list)),
        }
    }

    /// A literal field: its name by index (non-zero) or as a string, then its value.
    fn literal(&self, input: &mut Input<'_>, prefix: u32) -> Result<(Bytes, Bytes), HpackError> {
        let name = match input.integer(prefix)? {
            0 => input.string()?,
            index => self.entry(index)?.0,
        };
        Ok((name, input.string()?))
    }

    /// Entry `index` of the static table (1-61), then of the dynamic one.
    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), HpackError> {
        match index {
            0 => Err(HpackError::Malformed),
            1..=61 => {
                let (name, value) = STATIC[index - 1];
                Ok((Bytes::from_static(name.as_bytes()), Bytes::from_static(value.as_bytes())))
            }
            _ => self.table.get(index - 62).cloned().ok_or(HpackError::Malformed),
        }
    }

    /// Adds an entry (RFC 7541 §4.4): older ones are evicted to make room; one larger than
    /// the table empties it.
    fn insert(&mut self, field: (Bytes, Bytes)) {
        let entry = field.0.len() + field.1.len() + FIELD_OVERHEAD;
        if entry > self.max {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(entry);
        self.size += entry;
        self.table.push_front(field);
    }

    /// Evicts the oldest entries until `room` more bytes fit under the maximum.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((name, value)) = self.table.pop_back() else { return };
            self.size -= name.len() + value.len() + FIELD_OVERHEAD;
        }
    }
}

/// RFC 7541 Appendix A: the static table, index 1 first.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Appends `value` as an HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1); `first`
/// holds the bits of the first byte above the prefix.
fn write_integer(dst: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        dst.push(first | value as u8);
        return;
    }
    dst.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        dst.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    dst.push(rest as u8);
}

/// Appends a string literal without Huffman coding (RFC 7541 §5.2).
fn write_string(dst: &mut Vec<u8>, bytes: &[u8]) {
    write_integer(dst, 0, 7, bytes.len());
    dst.extend_from_slice(bytes);
}

/// Where a field stands in the static table.
enum InStatic {
    /// Name and value: the field is sent as this index alone.
    Field(usize),
    /// The name only.
    Name(usize),
    Absent,
}

fn in_static(name: &[u8], value: &[u8]) -> InStatic {
    let mut found = InStatic::Absent;
    for (i, (n, v)) in STATIC.iter().enumerate() {
        if n.as_bytes() != name {
            continue;
        }
        if v.as_bytes() == value {
            return InStatic::Field(i + 1);
        }
        if matches!(found, InStatic::Absent) {
            found = InStatic::Name(i + 1);
        }
    }
    found
}

/// Appends `fields` as one header block that leaves both ends' dynamic tables untouched.
/// Names must be lowercase (RFC 9113 §8.2.1), as `http`'s header names are.
pub(crate) fn encode<'a>(fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, dst: &mut Vec<u8>) {
    for (name, value) in fields {
        match in_static(name, value) {
            // Indexed field (RFC 7541 §6.1).
            InStatic::Field(index) => write_integer(dst, 0x80, 7, index),
            // Literal without indexing, indexed name (§6.2.2).
            InStatic::Name(index) => {
                write_integer(dst, 0, 4, index);
                write_string(dst, value);
            }
            // Literal without indexing, new name.
            InStatic::Absent => {
                dst.push(0);
                write_string(dst, name);
                write_string(dst, value);
            }
        }
    }
}

#[cfg(test)]
mod tests;
