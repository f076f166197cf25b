package source

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
)

// The disk copy of a source is one file in the cache directory, written
// whole to a temporary file, synced, and renamed over the previous copy (and
// the directory synced), so that a crash leaves the old copy or the new one,
// never a mix. Its first line is the JSON metadata (cacheMeta); the rest is
// the payload: a URL's body as received, or a zone's records in wire form
// (zoneKind). The metadata holds the payload's
// SHA-256, so a truncated or edited file is detected and ignored.

// cacheMeta is the first line of a cache file.
type cacheMeta struct {
	Source       string    `json:"source"`
	Kind         string    `json:"kind"` // "body" or zoneKind
	Fetched      time.Time `json:"fetched"`
	PayloadSHA   string    `json:"payload_sha256"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	Zone         string    `json:"zone,omitempty"`
	Serial       uint32    `json:"serial,omitempty"`
}

// cachePath is the file that keeps the copy of the source called key (a
// zone's name; a URL without its fragment, and its pin when it has one):
// readable, and unique by a hash of key.
func cachePath(dir, key string) string {
	sum := sha256.Sum256([]byte(key))
	var b strings.Builder
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 64 {
			break
		}
	}
	return filepath.Join(dir, b.String()+"-"+hex.EncodeToString(sum[:8])+".cache")
}

// writeCache replaces the file at path with meta and the payload,
// atomically.
func writeCache(path string, meta cacheMeta, payload []byte) error {
	return writeCacheWith(path, meta, sha256.Sum256(payload), func(w io.Writer) error {
		_, err := w.Write(payload)
		return err
	})
}

// writeCacheWith replaces the file at path with meta and the payload that
// write writes, whose SHA-256 is sum, atomically. The payload is streamed
// to the file, never held whole: a zone of a million records is tens of
// megabytes.
func writeCacheWith(path string, meta cacheMeta, sum [32]byte, write func(io.Writer) error) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	meta.PayloadSHA = hex.EncodeToString(sum[:])
	head, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	removeStaleTemps(filepath.Dir(path))
	f, err := os.CreateTemp(filepath.Dir(path), tempPattern)
	if err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(head)
	w.WriteByte('\n')
	if err := write(w); err != nil {
		return fmt.Errorf("writing cache %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing cache %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing cache %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing cache %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing cache %s: %w", path, err)
	}
	// The rename is durable once the directory is synced.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// tempPattern names the file a copy is written to before it is renamed
// over the copy (os.CreateTemp's pattern).
const tempPattern = ".tmp-*"

// payloadPattern names the file a zone's records are written to before
// its copy is (Zone.writeCacheFile): a process stopped mid-write leaves
// it behind as it leaves a tempPattern file, and it is the larger of the
// two, the whole zone.
const payloadPattern = ".payload-*"

// staleTemp is the age past which a temporary file in the cache folder is
// one a process that stopped mid-write left (a crash, a kill -9, the
// machine going down): a write takes at most the ten minutes a fetch or
// transfer may take, and a copy of a zone is tens of megabytes that a
// folder kept for years would fill up with.
const staleTemp = time.Hour

// removeStaleTemps removes the temporary files in dir (tempPattern and
// payloadPattern) last written more than staleTemp ago; what it cannot
// remove it leaves, as a write of a copy goes on without it.
func removeStaleTemps(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		temp := func(pattern string) bool { return strings.HasPrefix(e.Name(), strings.TrimSuffix(pattern, "*")) }
		if !e.Type().IsRegular() || !temp(tempPattern) && !temp(payloadPattern) {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTemp {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// ErrNoCopy says a source has no disk copy (none was written yet, or no
// cache directory is set): not a failure.
var ErrNoCopy = errors.New("no disk copy")

// Cached returns the disk copy of src, read and checked as at the start of
// Run but delivered nowhere and changing no state (for `dnsfence
// explain` and `check` while the network is down); the error wraps
// ErrNoCopy when there is none.
func Cached(src Source) (Content, error) {
	var c *Content
	var err error
	switch s := src.(type) {
	case *URL:
		c, err = s.readCopy()
	case *Zone:
		c, err = s.readCopy()
	default:
		err = ErrNoCopy
	}
	if err != nil {
		return Content{}, fmt.Errorf("%s: %w", src.Name(), err)
	}
	return *c, nil
}

// readCache returns the metadata and payload of the copy at path, checked
// against the metadata's hash and source name; ErrNoCopy when there is
// none.
func readCache(path, source, kind string) (cacheMeta, []byte, error) {
	var meta cacheMeta
	data, err := readCacheFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return meta, nil, ErrNoCopy
	}
	if err != nil {
		return meta, nil, fmt.Errorf("reading cache: %w", err)
	}
	head, payload, ok := bytes.Cut(data, []byte("\n"))
	if !ok {
		return meta, nil, fmt.Errorf("reading cache %s: no metadata line", path)
	}
	if err := json.Unmarshal(head, &meta); err != nil {
		return meta, nil, fmt.Errorf("reading cache %s: metadata: %w", path, err)
	}
	if meta.Source != source || meta.Kind != kind {
		return meta, nil, fmt.Errorf("reading cache %s: holds %s %q, not %s %q", path, meta.Kind, meta.Source, kind, source)
	}
	sum := sha256.Sum256(payload)
	if hex.EncodeToString(sum[:]) != meta.PayloadSHA {
		return meta, nil, fmt.Errorf("reading cache %s: content does not match its SHA-256 (truncated or edited)", path)
	}
	return meta, payload, nil
}

// readCacheFile reads the disk copy at path, which writeCacheWith made a
// regular file: anything else in its place (a named pipe, a device) is
// refused unread. os.ReadFile's open(2) of a named pipe waits for a
// writer for ever, and the source, stuck before its first fetch, never
// asked the network: its list blocked none of its names with the server
// up, no line logged, and Run deaf to its context.
func readCacheFile(path string) ([]byte, error) {
	f, err := blocklist.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if !f.Regular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return io.ReadAll(f)
}

func checkBase64(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if _, err := base64.StdEncoding.DecodeString(s); err != nil {
		return fmt.Errorf("not base64: %w", err)
	}
	return nil
}
