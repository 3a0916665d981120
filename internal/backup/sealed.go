package backup

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// A backup file is sealed with AES-256-GCM in chunks, so a snapshot of any
// size streams through a fixed amount of memory and any change to it is
// found:
//
//	header: magic "LOTSEBAK", version (1 byte), key id (8), salt (32), nonce prefix (7)
//	frames: final flag (1 byte), plaintext length (4, big endian), sealed chunk
//
// Each file is sealed with its own key, derived from the manager's key and
// the file's random salt (HKDF-SHA256), so nonces never repeat under one
// key however many backups the manager writes. Each chunk's nonce is the
// prefix, the chunk's number and the final flag, and the header is its
// additional data: reordered, dropped, altered or appended frames fail to
// open, and a file that ends before a final frame is truncated.

const (
	magic         = "LOTSEBAK"
	formatVersion = 1
	chunkSize     = 64 << 10
	keyIDLen      = 8
	saltLen       = 32
	prefixLen     = 7
	headerLen     = len(magic) + 1 + keyIDLen + saltLen + prefixLen
	hkdfInfo      = "lotse backup file key v1"
)

// KeySize is the length of a backup encryption key.
const KeySize = 32

// ErrCorrupt marks a backup file that is truncated, altered or not a
// backup at all.
var ErrCorrupt = errors.New("backup file is corrupt or truncated")

// ErrWrongKey marks a backup sealed with another manager's key, or in a
// format this Lotse does not know.
var ErrWrongKey = errors.New("backup sealed with another key")

// KeyID names a key without revealing it (the start of its SHA-256).
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:keyIDLen])
}

// newAEAD returns the cipher of one file: AES-256-GCM under the key
// derived from the manager's key and the file's salt.
func newAEAD(key, salt []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("backup encryption key has %d bytes, needs %d", len(key), KeySize)
	}
	fileKey, err := hkdf.Key(sha256.New, key, salt, hkdfInfo, KeySize)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(fileKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealWriter encrypts what is written to it; Close writes the final frame.
type sealWriter struct {
	w      io.Writer
	aead   cipher.AEAD
	header []byte
	prefix []byte
	n      uint32
	buf    []byte
	closed bool
}

func newSealWriter(w io.Writer, key []byte) (*sealWriter, error) {
	random := make([]byte, saltLen+prefixLen)
	if _, err := rand.Read(random); err != nil {
		return nil, err
	}
	salt, prefix := random[:saltLen], random[saltLen:]
	aead, err := newAEAD(key, salt)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(key)
	header := make([]byte, 0, headerLen)
	header = append(header, magic...)
	header = append(header, formatVersion)
	header = append(header, sum[:keyIDLen]...)
	header = append(header, salt...)
	header = append(header, prefix...)
	if _, err := w.Write(header); err != nil {
		return nil, err
	}
	return &sealWriter{w: w, aead: aead, header: header, prefix: prefix, buf: make([]byte, 0, chunkSize)}, nil
}

func (s *sealWriter) nonce(final bool) []byte {
	nonce := make([]byte, 0, s.aead.NonceSize())
	nonce = append(nonce, s.prefix...)
	nonce = binary.BigEndian.AppendUint32(nonce, s.n)
	if final {
		return append(nonce, 1)
	}
	return append(nonce, 0)
}

func (s *sealWriter) frame(final bool) error {
	if s.n == ^uint32(0) {
		return errors.New("backup too large for one file")
	}
	out := make([]byte, 5, 5+len(s.buf)+s.aead.Overhead())
	if final {
		out[0] = 1
	}
	binary.BigEndian.PutUint32(out[1:5], uint32(len(s.buf)))
	out = s.aead.Seal(out, s.nonce(final), s.buf, s.header)
	s.n++
	s.buf = s.buf[:0]
	_, err := s.w.Write(out)
	return err
}

func (s *sealWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(chunkSize-len(s.buf), len(p))
		s.buf = append(s.buf, p[:n]...)
		p, written = p[n:], written+n
		if len(s.buf) == chunkSize {
			if err := s.frame(false); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (s *sealWriter) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.frame(true)
}

// openReader decrypts a sealed stream; it returns ErrCorrupt (wrapped) for
// anything that does not open, including a stream without a final frame.
type openReader struct {
	r      *bufio.Reader
	aead   cipher.AEAD
	header []byte
	prefix []byte
	n      uint32
	plain  []byte
	done   bool
	err    error
}

func newOpenReader(r io.Reader, key []byte) (*openReader, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("backup encryption key has %d bytes, needs %d", len(key), KeySize)
	}
	header := make([]byte, headerLen)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, fmt.Errorf("%w: no header (%v)", ErrCorrupt, err)
	}
	if !bytes.Equal(header[:len(magic)], []byte(magic)) {
		return nil, fmt.Errorf("%w: not a Lotse backup", ErrCorrupt)
	}
	if header[len(magic)] != formatVersion {
		return nil, fmt.Errorf("%w: backup format %d is not known to this Lotse (it reads %d)", ErrWrongKey, header[len(magic)], formatVersion)
	}
	id := header[len(magic)+1 : len(magic)+1+keyIDLen]
	if got := KeyID(key); hex.EncodeToString(id) != got {
		return nil, fmt.Errorf("%w: the backup was encrypted with backup key %x, this manager has key %s: put the key it was made with into Secret lotse-system/lotse-backup-key", ErrWrongKey, id, got)
	}
	salt := header[len(magic)+1+keyIDLen : len(magic)+1+keyIDLen+saltLen]
	aead, err := newAEAD(key, salt)
	if err != nil {
		return nil, err
	}
	return &openReader{r: bufio.NewReaderSize(r, chunkSize+64), aead: aead, header: header,
		prefix: header[len(magic)+1+keyIDLen+saltLen:]}, nil
}

func (o *openReader) next() error {
	var fh [5]byte
	if _, err := io.ReadFull(o.r, fh[:]); err != nil {
		return fmt.Errorf("%w: ends after %d chunks without its final one", ErrCorrupt, o.n)
	}
	final := fh[0] == 1
	if fh[0] > 1 {
		return fmt.Errorf("%w: bad frame %d", ErrCorrupt, o.n)
	}
	size := int(binary.BigEndian.Uint32(fh[1:]))
	if size > chunkSize {
		return fmt.Errorf("%w: frame %d too large", ErrCorrupt, o.n)
	}
	sealed := make([]byte, size+o.aead.Overhead())
	if _, err := io.ReadFull(o.r, sealed); err != nil {
		return fmt.Errorf("%w: frame %d is cut short", ErrCorrupt, o.n)
	}
	nonce := make([]byte, 0, o.aead.NonceSize())
	nonce = append(nonce, o.prefix...)
	nonce = binary.BigEndian.AppendUint32(nonce, o.n)
	nonce = append(nonce, fh[0])
	plain, err := o.aead.Open(sealed[:0], nonce, sealed, o.header)
	if err != nil {
		return fmt.Errorf("%w: frame %d does not authenticate", ErrCorrupt, o.n)
	}
	o.n++
	o.plain = plain
	if final {
		o.done = true
		if _, err := o.r.ReadByte(); err != io.EOF {
			return fmt.Errorf("%w: data after the final frame", ErrCorrupt)
		}
	}
	return nil
}

func (o *openReader) Read(p []byte) (int, error) {
	for len(o.plain) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		if o.done {
			return 0, io.EOF
		}
		if err := o.next(); err != nil {
			o.err = err
			return 0, err
		}
	}
	n := copy(p, o.plain)
	o.plain = o.plain[n:]
	return n, nil
}
