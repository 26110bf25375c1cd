//! PE32+ layout facts that Authenticode needs: where the CheckSum field and the Certificate Table directory
//! entry are, the section table, the certificate table, the image checksum, the Authenticode image hash and the
//! page-hash table.
//!
//! Input: the bytes of a PE32+ file. Output: offsets, digests and rewritten bytes. Every read is bounds-checked;
//! a truncated or inconsistent header gives [`SigningError::MalformedPe`] naming the field.
//!
//! References: PE format spec ("Optional Header Data Directories", "The Attribute Certificate Table", appendix A),
//! Authenticode_PE.docx via driver-image-and-signing.md §3.1, §3.2 and §3.4, osslsigncode `pe.c`.

use crate::error::SigningError;
use sha2::{Digest, Sha256};

/// `IMAGE_NT_OPTIONAL_HDR64_MAGIC`.
const PE32PLUS_MAGIC: u16 = 0x20b;
/// `IMAGE_DIRECTORY_ENTRY_SECURITY`: the Certificate Table data directory (its address is a file offset).
const SECURITY_DIRECTORY: u32 = 4;
/// WIN_CERTIFICATE header: dwLength, wRevision, wCertificateType.
pub const WIN_CERTIFICATE_HEADER_LEN: usize = 8;
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// One entry of the section table, reduced to what hashing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRange {
    pub name: String,
    pub virtual_address: u32,
    pub pointer_to_raw_data: u32,
    pub size_of_raw_data: u32,
}

/// Offsets of the fields Authenticode excludes or rewrites, parsed from a PE32+ file.
#[derive(Debug, Clone)]
pub struct PeLayout {
    /// File offset of `OptionalHeader.CheckSum`.
    pub checksum_offset: usize,
    /// File offset of the 8-byte Certificate Table data directory entry.
    pub security_dir_offset: usize,
    /// `OptionalHeader.SizeOfHeaders`.
    pub size_of_headers: u32,
    /// `OptionalHeader.SectionAlignment` (the page size of page hashes).
    pub section_alignment: u32,
    /// `OptionalHeader.FileAlignment`.
    pub file_alignment: u32,
    /// Certificate table as recorded in the data directory: (file offset, size); (0, 0) when unsigned.
    pub certificate_table: (u32, u32),
    pub sections: Vec<SectionRange>,
    /// Length of the file these offsets describe.
    pub file_len: usize,
}

fn read_u16(data: &[u8], offset: usize, what: &str) -> Result<u16, SigningError> {
    data.get(offset..offset + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| SigningError::MalformedPe(format!("file ends before {what} at offset {offset:#x}")))
}

fn read_u32(data: &[u8], offset: usize, what: &str) -> Result<u32, SigningError> {
    data.get(offset..offset + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| SigningError::MalformedPe(format!("file ends before {what} at offset {offset:#x}")))
}

/// One section header (PE format "Section Table").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

/// The headers of a PE32+ image, read with bounds checks and no further judgement: the workspace's one PE
/// reader. Authenticode ([`PeLayout`]) adds the checks signing needs; the linker's lint judges the values against
/// the driver rules, so a broken image fails the rule it breaks rather than failing to parse.
#[derive(Debug, Clone)]
pub struct PeHeaders {
    pub machine: u16,
    pub number_of_sections: u16,
    /// COFF `Characteristics`.
    pub characteristics: u16,
    pub size_of_optional_header: u16,
    /// File offset of the optional header.
    pub optional_header_offset: usize,
    pub magic: u16,
    pub major_linker_version: u8,
    pub address_of_entry_point: u32,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub check_sum: u32,
    /// File offset of `OptionalHeader.CheckSum`.
    pub checksum_offset: usize,
    pub subsystem: u16,
    pub dll_characteristics: u16,
    pub number_of_rva_and_sizes: u32,
    /// The first `min(NumberOfRvaAndSizes, 16)` data directories as (RVA or file offset, size), the rest (0, 0).
    pub data_directories: [(u32, u32); 16],
    pub sections: Vec<SectionHeader>,
    /// File offset of the section table and just past it.
    pub section_table: usize,
    pub section_table_end: usize,
}

impl PeHeaders {
    /// Reads the DOS, COFF and optional headers and the section table of a PE32+ image.
    pub fn parse(data: &[u8]) -> Result<PeHeaders, SigningError> {
        if data.get(0..2) != Some(b"MZ") {
            return Err(SigningError::MalformedPe("missing MZ signature at offset 0".into()));
        }
        let e_lfanew = read_u32(data, 0x3c, "e_lfanew")? as usize;
        if data.get(e_lfanew..e_lfanew.saturating_add(4)) != Some(b"PE\0\0") {
            return Err(SigningError::MalformedPe(format!("missing PE signature at e_lfanew {e_lfanew:#x}")));
        }
        let coff = e_lfanew + 4;
        let machine = read_u16(data, coff, "COFF Machine")?;
        let number_of_sections = read_u16(data, coff + 2, "COFF NumberOfSections")?;
        let size_of_optional_header = read_u16(data, coff + 16, "COFF SizeOfOptionalHeader")?;
        let characteristics = read_u16(data, coff + 18, "COFF Characteristics")?;
        let opt = coff + 20;
        let magic = read_u16(data, opt, "optional header magic")?;
        if magic != PE32PLUS_MAGIC {
            return Err(SigningError::UnsupportedPe(format!(
                "optional header magic {magic:#x}: only PE32+ (0x20b) images, as Windows x64/ARM64 drivers are"
            )));
        }
        let u32_at = |offset: usize, what: &str| read_u32(data, opt + offset, what);
        let number_of_rva_and_sizes = u32_at(108, "NumberOfRvaAndSizes")?;
        let mut data_directories = [(0, 0); 16];
        for (i, entry) in data_directories.iter_mut().enumerate().take(number_of_rva_and_sizes.min(16) as usize) {
            *entry = (u32_at(112 + 8 * i, "data directory")?, u32_at(116 + 8 * i, "data directory")?);
        }
        let section_table = opt + size_of_optional_header as usize;
        let section_table_end = section_table + 40 * number_of_sections as usize;
        let mut sections = Vec::with_capacity(number_of_sections as usize);
        for i in 0..number_of_sections as usize {
            let s = section_table + 40 * i;
            let raw = data.get(s..s + 40).ok_or_else(|| {
                SigningError::MalformedPe(format!(
                    "section table ({number_of_sections} entries at {section_table:#x}) runs past the end of the file"
                ))
            })?;
            let name_len = raw[..8].iter().position(|&b| b == 0).unwrap_or(8);
            let field = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
            sections.push(SectionHeader {
                name: String::from_utf8_lossy(&raw[..name_len]).into_owned(),
                virtual_size: field(8),
                virtual_address: field(12),
                size_of_raw_data: field(16),
                pointer_to_raw_data: field(20),
                characteristics: field(36),
            });
        }
        Ok(PeHeaders {
            machine,
            number_of_sections,
            characteristics,
            size_of_optional_header,
            optional_header_offset: opt,
            magic,
            major_linker_version: *data.get(opt + 2).ok_or_else(|| {
                SigningError::MalformedPe(format!("file ends before MajorLinkerVersion at offset {:#x}", opt + 2))
            })?,
            address_of_entry_point: u32_at(16, "AddressOfEntryPoint")?,
            section_alignment: u32_at(32, "SectionAlignment")?,
            file_alignment: u32_at(36, "FileAlignment")?,
            size_of_image: u32_at(56, "SizeOfImage")?,
            size_of_headers: u32_at(60, "SizeOfHeaders")?,
            check_sum: u32_at(64, "CheckSum")?,
            checksum_offset: opt + 64,
            subsystem: read_u16(data, opt + 68, "Subsystem")?,
            dll_characteristics: read_u16(data, opt + 70, "DllCharacteristics")?,
            number_of_rva_and_sizes,
            data_directories,
            sections,
            section_table,
            section_table_end,
        })
    }
}

impl PeLayout {
    /// Parses the headers of a PE32+ image and checks what Authenticode relies on.
    pub fn parse(data: &[u8]) -> Result<Self, SigningError> {
        let headers = PeHeaders::parse(data)?;
        let opt = headers.optional_header_offset;
        let size_of_optional_header = headers.size_of_optional_header as usize;
        let (section_alignment, file_alignment, size_of_headers) =
            (headers.section_alignment, headers.file_alignment, headers.size_of_headers);
        let checksum_offset = headers.checksum_offset;
        let number_of_rva_and_sizes = headers.number_of_rva_and_sizes;
        if number_of_rva_and_sizes <= SECURITY_DIRECTORY {
            return Err(SigningError::MalformedPe(format!(
                "NumberOfRvaAndSizes is {number_of_rva_and_sizes}: no Certificate Table directory entry"
            )));
        }
        let data_dirs = opt + 112;
        let security_dir_offset = data_dirs + 8 * SECURITY_DIRECTORY as usize;
        if security_dir_offset + 8 > opt + size_of_optional_header {
            return Err(SigningError::MalformedPe(format!(
                "SizeOfOptionalHeader {size_of_optional_header:#x} does not cover the Certificate Table entry"
            )));
        }
        let cert_offset = read_u32(data, security_dir_offset, "Certificate Table offset")?;
        let cert_size = read_u32(data, security_dir_offset + 4, "Certificate Table size")?;

        let (number_of_sections, section_table_end) = (headers.sections.len(), headers.section_table_end);
        if (size_of_headers as usize) < section_table_end || size_of_headers as usize > data.len() {
            return Err(SigningError::MalformedPe(format!(
                "SizeOfHeaders {size_of_headers:#x} does not cover the section table (ends at {section_table_end:#x}) \
                 or exceeds the file length {:#x}",
                data.len()
            )));
        }
        let mut sections = Vec::with_capacity(number_of_sections);
        for section in headers.sections {
            let SectionHeader { name, virtual_address, size_of_raw_data, pointer_to_raw_data, .. } = section;
            if size_of_raw_data != 0 && pointer_to_raw_data as u64 + size_of_raw_data as u64 > data.len() as u64 {
                return Err(SigningError::MalformedPe(format!(
                    "section {name:?} raw data {pointer_to_raw_data:#x}+{size_of_raw_data:#x} runs past the end \
                     of the file ({:#x})",
                    data.len()
                )));
            }
            // The headers occupy the file up to SizeOfHeaders (PE format, "Section Table"): raw data starting
            // inside them would be hashed twice, as headers and as section, and no two tools agree on it.
            if size_of_raw_data != 0 && pointer_to_raw_data < size_of_headers {
                return Err(SigningError::MalformedPe(format!(
                    "section {name:?} raw data at {pointer_to_raw_data:#x} overlaps the headers (SizeOfHeaders \
                     {size_of_headers:#x})"
                )));
            }
            sections.push(SectionRange { name, virtual_address, pointer_to_raw_data, size_of_raw_data });
        }
        let layout = PeLayout {
            checksum_offset,
            security_dir_offset,
            size_of_headers,
            section_alignment,
            file_alignment,
            certificate_table: (cert_offset, cert_size),
            sections,
            file_len: data.len(),
        };
        if cert_offset != 0 || cert_size != 0 {
            let end = cert_offset as u64 + cert_size as u64;
            if (cert_offset as usize) < size_of_headers as usize || end > data.len() as u64 {
                return Err(SigningError::MalformedPe(format!(
                    "Certificate Table {cert_offset:#x}+{cert_size:#x} lies outside the file (length {:#x})",
                    data.len()
                )));
            }
        }
        Ok(layout)
    }

    /// End of the bytes that are signed: the certificate table's start, or the end of the file.
    pub fn signed_end(&self) -> usize {
        match self.certificate_table {
            (0, 0) => self.file_len,
            (offset, _) => offset as usize,
        }
    }

    pub fn is_signed(&self) -> bool {
        self.certificate_table != (0, 0)
    }

    /// End of the last section's raw data (what the page-hash table's final entry records).
    pub fn end_of_section_data(&self) -> usize {
        self.sections
            .iter()
            .filter(|s| s.size_of_raw_data != 0)
            .map(|s| s.pointer_to_raw_data as usize + s.size_of_raw_data as usize)
            .max()
            .unwrap_or(self.size_of_headers as usize)
    }
}

/// The PE image checksum (CheckSumMappedFile; osslsigncode `pe_calc_checksum`): 16-bit one's-complement-style
/// sum over the file with the CheckSum field taken as zero, plus the file length.
pub fn pe_checksum(data: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < data.len() {
        let word = if i >= checksum_offset && i < checksum_offset + 4 {
            0
        } else if i + 1 < data.len() {
            u16::from_le_bytes([data[i], data[i + 1]]) as u64
        } else {
            data[i] as u64
        };
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
        i += 2;
    }
    let folded = (sum & 0xffff) + (sum >> 16);
    (folded as u32 & 0xffff).wrapping_add(data.len() as u32)
}

/// Reads the CheckSum field recorded in the header.
pub fn recorded_checksum(data: &[u8], layout: &PeLayout) -> u32 {
    read_u32(data, layout.checksum_offset, "CheckSum").unwrap_or(0)
}

/// Writes a freshly computed checksum into the header (PE spec: it covers the whole file, so this runs last).
pub fn update_checksum(data: &mut [u8], layout: &PeLayout) {
    let checksum = pe_checksum(data, layout.checksum_offset);
    data[layout.checksum_offset..layout.checksum_offset + 4].copy_from_slice(&checksum.to_le_bytes());
}

/// The Authenticode SHA-256 image hash (driver-image-and-signing.md §3.2, the linear form osslsigncode and signify
/// use): the file from 0 to the certificate table (or EOF) without the CheckSum field and the Certificate Table
/// directory entry, zero-padded to a multiple of 8 inside the hash.
pub fn authenticode_sha256(data: &[u8], layout: &PeLayout) -> [u8; 32] {
    let end = layout.signed_end();
    let mut hasher = Sha256::new();
    hasher.update(&data[..layout.checksum_offset]);
    hasher.update(&data[layout.checksum_offset + 4..layout.security_dir_offset]);
    hasher.update(&data[layout.security_dir_offset + 8..end]);
    let pad = (8 - end % 8) % 8;
    hasher.update(&[0u8; 8][..pad]);
    hasher.finalize().into()
}

/// Page-hash table for `SpcPeImagePageHashes` V2 (SHA-256), as osslsigncode `pe_page_hash_calc` builds it:
/// `{u32 offset, sha256}` for the headers (without CheckSum and the Certificate Table entry, zero-padded to one
/// page), one entry per page of each section's raw data (last page zero-padded), and a final
/// `{end of last section, zero digest}`.
pub fn page_hashes_sha256(data: &[u8], layout: &PeLayout) -> Result<Vec<u8>, SigningError> {
    let page = layout.section_alignment as usize;
    if page == 0 || !page.is_power_of_two() {
        return Err(SigningError::UnsupportedPe(format!(
            "SectionAlignment {page:#x} is not a power of two; page hashes need a page size"
        )));
    }
    let headers = layout.size_of_headers as usize;
    if headers > page {
        return Err(SigningError::UnsupportedPe(format!(
            "SizeOfHeaders {headers:#x} exceeds the page size {page:#x}; page hashes cover the headers in one page"
        )));
    }
    let zeroes = vec![0u8; page];
    let mut table = Vec::new();
    let mut hasher = Sha256::new();
    hasher.update(&data[..layout.checksum_offset]);
    hasher.update(&data[layout.checksum_offset + 4..layout.security_dir_offset]);
    hasher.update(&data[layout.security_dir_offset + 8..headers]);
    hasher.update(&zeroes[..page - headers]);
    table.extend_from_slice(&0u32.to_le_bytes());
    table.extend_from_slice(&hasher.finalize());
    let mut last_end = 0usize;
    for section in layout.sections.iter().filter(|s| s.size_of_raw_data != 0) {
        let start = section.pointer_to_raw_data as usize;
        let size = section.size_of_raw_data as usize;
        // Page-hash tables list file pages in ascending order, once each (osslsigncode and Windows check them
        // that way); overlapping or unordered raw data has no such table.
        if start < last_end {
            return Err(SigningError::UnsupportedPe(format!(
                "section {:?} raw data at {start:#x} overlaps or precedes the previous section's (ending at \
                 {last_end:#x}); page hashes need ascending, disjoint section data",
                section.name
            )));
        }
        let mut offset = 0;
        while offset < size {
            let chunk = &data[start + offset..start + size.min(offset + page)];
            let mut hasher = Sha256::new();
            hasher.update(chunk);
            hasher.update(&zeroes[..page - chunk.len()]);
            table.extend_from_slice(&((start + offset) as u32).to_le_bytes());
            table.extend_from_slice(&hasher.finalize());
            offset += page;
        }
        last_end = start + size;
    }
    table.extend_from_slice(&(last_end as u32).to_le_bytes());
    table.extend_from_slice(&[0u8; 32]);
    Ok(table)
}

/// Removes an existing certificate table at the end of the file and clears the directory entry.
pub fn strip_certificate_table(data: &mut Vec<u8>, layout: &PeLayout) -> Result<(), SigningError> {
    let (offset, size) = layout.certificate_table;
    if !layout.is_signed() {
        return Ok(());
    }
    if offset as usize + size as usize != data.len() {
        return Err(SigningError::UnsupportedPe(format!(
            "certificate table {offset:#x}+{size:#x} is not at the end of the file ({:#x}); cannot replace it",
            data.len()
        )));
    }
    data.truncate(offset as usize);
    data[layout.security_dir_offset..layout.security_dir_offset + 8].fill(0);
    Ok(())
}

/// Pads the image with zeros to a multiple of 8 (the certificate table is quadword aligned and the padding is
/// hashed: toolchain-notes.md §4 pitfall 4).
pub fn pad_to_8(data: &mut Vec<u8>) {
    let pad = (8 - data.len() % 8) % 8;
    data.resize(data.len() + pad, 0);
}

/// Appends one WIN_CERTIFICATE (revision 2.0, PKCS#7 SignedData) holding `pkcs7`, sets the Certificate Table
/// directory entry and recomputes the checksum. `data` must already be 8-byte padded.
pub fn append_certificate_table(data: &mut Vec<u8>, layout: &PeLayout, pkcs7: &[u8]) -> Result<(), SigningError> {
    debug_assert!(data.len().is_multiple_of(8));
    let offset = u32::try_from(data.len())
        .map_err(|_| SigningError::UnsupportedPe("image larger than 4 GiB cannot carry a certificate table".into()))?;
    let length = (WIN_CERTIFICATE_HEADER_LEN + pkcs7.len()).next_multiple_of(8);
    let length32 = u32::try_from(length).map_err(|_| SigningError::Encoding("signature larger than 4 GiB".into()))?;
    data.extend_from_slice(&length32.to_le_bytes());
    data.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    data.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    data.extend_from_slice(pkcs7);
    pad_to_8(data);
    data[layout.security_dir_offset..layout.security_dir_offset + 4].copy_from_slice(&offset.to_le_bytes());
    data[layout.security_dir_offset + 4..layout.security_dir_offset + 8].copy_from_slice(&length32.to_le_bytes());
    update_checksum(data, layout);
    Ok(())
}

/// One WIN_CERTIFICATE entry of a certificate table.
#[derive(Debug, Clone)]
pub struct WinCertificate<'a> {
    pub offset: usize,
    pub length: u32,
    pub revision: u16,
    pub certificate_type: u16,
    pub content: &'a [u8],
}

/// Splits the certificate table into its WIN_CERTIFICATE entries (each 8-byte aligned).
pub fn certificate_entries<'a>(data: &'a [u8], layout: &PeLayout) -> Result<Vec<WinCertificate<'a>>, SigningError> {
    let (start, size) = layout.certificate_table;
    let (start, end) = (start as usize, start as usize + size as usize);
    let mut entries = Vec::new();
    let mut offset = start;
    while offset < end {
        if end - offset < WIN_CERTIFICATE_HEADER_LEN {
            return Err(SigningError::MalformedPe(format!(
                "certificate table: {} trailing bytes at {offset:#x} are too short for a WIN_CERTIFICATE",
                end - offset
            )));
        }
        let length = read_u32(data, offset, "WIN_CERTIFICATE dwLength")?;
        let revision = read_u16(data, offset + 4, "WIN_CERTIFICATE wRevision")?;
        let certificate_type = read_u16(data, offset + 6, "WIN_CERTIFICATE wCertificateType")?;
        if (length as usize) < WIN_CERTIFICATE_HEADER_LEN || offset + length as usize > end {
            return Err(SigningError::MalformedPe(format!(
                "WIN_CERTIFICATE at {offset:#x}: dwLength {length:#x} does not fit the certificate table \
                 ({start:#x}..{end:#x})"
            )));
        }
        entries.push(WinCertificate {
            offset,
            length,
            revision,
            certificate_type,
            content: &data[offset + WIN_CERTIFICATE_HEADER_LEN..offset + length as usize],
        });
        offset += (length as usize).next_multiple_of(8);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_ignores_the_checksum_field_and_adds_the_length() {
        let data = [1u8, 0, 2, 0, 0xff, 0xff, 0xff, 0xff, 3];
        // words: 1, 2, (skipped field), 3 -> 6, plus length 9.
        assert_eq!(pe_checksum(&data, 4), 6 + 9);
    }

    #[test]
    fn checksum_folds_carries() {
        let data = [0xff, 0xff, 0x02, 0x00];
        // 0xffff + 2 = 0x10001 -> fold -> 0x0002; plus length 4.
        assert_eq!(pe_checksum(&data, 100), 2 + 4);
    }

    #[test]
    fn parse_rejects_truncated_and_non_pe_input() {
        assert!(matches!(PeLayout::parse(b"MZ"), Err(SigningError::MalformedPe(_))));
        assert!(matches!(PeLayout::parse(b"ELF...."), Err(SigningError::MalformedPe(_))));
        let mut data = vec![0u8; 0x100];
        data[0..2].copy_from_slice(b"MZ");
        data[0x3c] = 0xf0;
        assert!(matches!(PeLayout::parse(&data), Err(SigningError::MalformedPe(_))));
    }
}

/// The functions an image imports from one module (PE format "Import Directory Table").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedModule {
    pub dll: String,
    /// Function names; an import by ordinal is `#<ordinal>`.
    pub functions: Vec<String>,
}

impl PeHeaders {
    /// File offset of `len` bytes of raw data at `rva`, if a section holds them.
    pub fn offset_of_rva(&self, rva: u32, len: usize, file_len: usize) -> Option<usize> {
        let s = self.sections.iter().find(|s| {
            rva >= s.virtual_address && u64::from(rva) < u64::from(s.virtual_address) + u64::from(s.size_of_raw_data)
        })?;
        let delta = (rva - s.virtual_address) as usize;
        if delta.checked_add(len)? > s.size_of_raw_data as usize {
            return None;
        }
        let offset = (s.pointer_to_raw_data as usize).checked_add(delta)?;
        (offset.checked_add(len)? <= file_len).then_some(offset)
    }

    /// The import directory: every descriptor up to the all-zero one, with its lookup table's names. Hostile input
    /// gives an error naming the bad field; at most 256 descriptors and 4096 functions each are read.
    pub fn imports(&self, data: &[u8]) -> Result<Vec<ImportedModule>, SigningError> {
        let bad = |m: String| SigningError::MalformedPe(m);
        let (dir_rva, _) = self.data_directories[1];
        let mut modules = Vec::new();
        if dir_rva == 0 {
            return Ok(modules);
        }
        let string = |rva: u32, what: &str| -> Result<String, SigningError> {
            let start = self.offset_of_rva(rva, 1, data.len()).ok_or_else(|| bad(format!("{what} RVA {rva:#x}")))?;
            let len = data[start..]
                .iter()
                .take(4096)
                .position(|&c| c == 0)
                .ok_or_else(|| bad(format!("{what} is not terminated")))?;
            Ok(String::from_utf8_lossy(&data[start..start + len]).into_owned())
        };
        for i in 0..256u32 {
            let d = dir_rva.wrapping_add(20 * i);
            let at = self
                .offset_of_rva(d, 20, data.len())
                .ok_or_else(|| bad(format!("import descriptor {i} at RVA {d:#x} is outside the sections")))?;
            let field = |o: usize| read_u32(data, at + o, "import descriptor");
            let (lookup, name, first_thunk) = (field(0)?, field(12)?, field(16)?);
            if lookup == 0 && name == 0 && first_thunk == 0 {
                return Ok(modules);
            }
            let dll = string(name, &format!("import descriptor {i} name"))?;
            let mut functions = Vec::new();
            let table = if lookup != 0 { lookup } else { first_thunk };
            for k in 0..4096u32 {
                let t = table.wrapping_add(8 * k);
                let o = self
                    .offset_of_rva(t, 8, data.len())
                    .ok_or_else(|| bad(format!("{dll}: import lookup entry {k} at RVA {t:#x}")))?;
                let thunk = u64::from_le_bytes(data[o..o + 8].try_into().expect("8 bytes"));
                if thunk == 0 {
                    break;
                }
                functions.push(if thunk >> 63 == 1 {
                    format!("#{}", thunk & 0xffff)
                } else {
                    string((thunk as u32).wrapping_add(2), &format!("{dll}: import name {k}"))?
                });
            }
            modules.push(ImportedModule { dll, functions });
        }
        Err(bad("more than 256 import descriptors".into()))
    }
}
