//! HPACK (RFC 7541): header blocks in and out.
//!
//! Decoding goes through `loona-hpack` (Huffman codes, the dynamic table), held to the
//! protocol's default table size of 4,096 bytes: we never announce a larger one, so a peer's
//! size update beyond it is an error rather than memory it makes us keep. Encoding is ours and
//! stateless: literals without indexing (the static table's entry or name where there is
//! one, no Huffman). Our blocks are a few per stream, off the hot path, so a dynamic table
//! would buy a few bytes for state on both ends.

use bytes::Bytes;

/// The dynamic table size both ends start with and we keep (SETTINGS_HEADER_TABLE_SIZE).
pub(crate) const TABLE_SIZE: usize = 4096;
/// What RFC 9113 §6.5.2 counts per field beside its name and value.
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
pub(crate) struct Decoder {
    inner: loona_hpack::Decoder<'static>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub(crate) fn new() -> Decoder {
        let mut inner = loona_hpack::Decoder::new();
        inner.set_max_allowed_table_size(TABLE_SIZE);
        Decoder { inner }
    }

    /// Decodes one complete header block (a HEADERS fragment and its CONTINUATIONs,
    /// concatenated). The whole block is decoded even past `max_list` bytes (name + value +
    /// 32 per field), so that the table stays in step with the peer's.
    pub(crate) fn decode(&mut self, block: &[u8], max_list: usize) -> Result<Vec<(Bytes, Bytes)>, HpackError> {
        let mut fields = Vec::new();
        let mut size = 0usize;
        self.inner
            .decode_with_cb(block, |name, value| {
                size = size.saturating_add(name.len() + value.len() + FIELD_OVERHEAD);
                if size <= max_list {
                    fields.push((Bytes::copy_from_slice(&name), Bytes::copy_from_slice(&value)));
                }
            })
            .map_err(|_| HpackError::Malformed)?;
        match size <= max_list {
            true => Ok(fields),
            false => Err(HpackError::TooLarge(max_list)),
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
