//! One decompression sniffer for every reader of tarballs and layers
//! (pull's unpack, `load`, `import`): gzip, zstd or plain, decided by the
//! content's magic bytes as docker decides it, whatever the media type or
//! file name claims.

use std::io::{BufReader, Cursor, Read};

/// How a blob is compressed, as its first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the first bytes of the content (four are enough).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// `input`, decompressed as its first bytes say. Multi-member gzip (as
/// pigz and some registries write) reads whole.
pub fn decompress<'a>(mut input: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    // Read the magic in full: one read of a pipe may return fewer bytes.
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let whole = BufReader::with_capacity(1 << 16, Cursor::new(head[..n].to_vec()).chain(input));
    Ok(match Compression::sniff(&head[..n]) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(whole)?),
        Compression::None => Box::new(whole),
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::decompress;

    fn read_all(r: impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        decompress(r).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A reader that hands out one byte per read, as a slow pipe may.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else { return Ok(0) };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn gzip_zstd_and_plain_are_told_by_their_bytes() {
        let data = b"a tar stream, or anything".repeat(100);
        assert_eq!(read_all(&gzip(&data)[..]), data);
        assert_eq!(read_all(&zstd::encode_all(&data[..], 3).unwrap()[..]), data);
        assert_eq!(read_all(&data[..]), data);
    }

    #[test]
    fn multi_member_gzip_reads_whole() {
        let mut two = gzip(b"first ");
        two.extend(gzip(b"second"));
        assert_eq!(read_all(&two[..]), b"first second");
    }

    #[test]
    fn a_magic_split_across_reads_is_still_seen() {
        let data = b"trickled".repeat(10);
        assert_eq!(read_all(Trickle(&zstd::encode_all(&data[..], 3).unwrap())), data);
        assert_eq!(read_all(Trickle(&gzip(&data))), data);
    }

    #[test]
    fn short_and_empty_inputs_are_plain() {
        assert_eq!(read_all(&b"ab"[..]), b"ab");
        assert_eq!(read_all(&b""[..]), b"");
        assert_eq!(read_all(&[0x1fu8][..]), [0x1f]);
    }

    #[test]
    fn a_corrupt_gzip_is_an_error_not_plain_data() {
        let mut bad = gzip(b"payload");
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        let mut out = Vec::new();
        assert!(decompress(&bad[..]).unwrap().read_to_end(&mut out).is_err());
    }
}
