package blocklist

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// PipeIdle is how long a file that is not a regular file (a named pipe,
// a process substitution's `/dev/fd/63`) may send nothing before reading
// it fails with os.ErrDeadlineExceeded: a pipe whose writer never writes
// must not hold a reload, and every reload after it, forever. A variable
// for tests only.
var PipeIdle = 10 * time.Second

// pipePoll is how often a named pipe with no writer yet is read again.
const pipePoll = 10 * time.Millisecond

// maxPipeBytes is the most a file that is not a regular file is read, in
// octets: a device that never ends (a list linked to /dev/zero, `yes >
// pipe`) fails there instead of filling memory. Ten times a
// million-entry list; a variable for tests only.
var maxPipeBytes int64 = 256 << 20

// pipeWhole bounds a whole read of a file that is not regular, in
// PipeIdle: a pipe whose writer never stops renews its read deadline, and
// a character device (/dev/zero) has none.
const pipeWhole = 6

// File is a list, range or configuration file opened for reading by Open.
type File struct {
	f      *os.File
	info   fs.FileInfo
	opened time.Time
	read   int64 // octets read of a file that is not regular
}

// Open opens the file at path for reading without waiting for a named
// pipe's writer. A blocking open(2) of a named pipe waits for a writer
// for ever (fifo(7)), holding the reload, and every reload after it; so
// the file is opened O_NONBLOCK, and Read waits for the writer instead,
// PipeIdle at most.
func Open(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{f: f, info: info, opened: time.Now()}, nil
}

// ReadFile is os.ReadFile through Open: it never waits for a named pipe's
// writer, nor more than PipeIdle for a pipe's next data.
func ReadFile(path string) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Regular reports whether the file is a regular file, which can be read
// again (Seek) and hashed without taking its content from anyone.
func (f *File) Regular() bool { return f.info.Mode().IsRegular() }

// Size is the file's size in octets when it was opened (0 for a pipe).
func (f *File) Size() int64 { return f.info.Size() }

// Read reads from the file. From a file that is not regular each read
// waits at most PipeIdle (os.ErrDeadlineExceeded), and reading more than
// maxPipeBytes in all is an error. A pipe that has sent nothing reads as
// empty until a writer comes (fifo(7): no writer is end of file), so its
// end of file before any data is waited past, up to PipeIdle after Open,
// and is then an error: an empty list from a pipe is more likely a writer
// that never came.
func (f *File) Read(p []byte) (int, error) {
	if f.Regular() {
		return f.f.Read(p)
	}
	if f.read >= maxPipeBytes {
		return 0, fmt.Errorf("%s: not a regular file, and more than %d octets long", f.f.Name(), maxPipeBytes)
	}
	p = p[:min(int64(len(p)), maxPipeBytes-f.read)]
	end := f.opened.Add(pipeWhole * PipeIdle)
	for {
		now := time.Now()
		if !now.Before(end) {
			return 0, fmt.Errorf("%s: %w: not a regular file, still sending after %s", f.f.Name(), os.ErrDeadlineExceeded, pipeWhole*PipeIdle)
		}
		// A pipe is in the runtime's poller, which the deadline needs; a
		// file that cannot have one (a character device) is bounded by
		// end and maxPipeBytes alone.
		deadline := now.Add(PipeIdle)
		if end.Before(deadline) {
			deadline = end
		}
		_ = f.f.SetReadDeadline(deadline)
		n, err := f.f.Read(p)
		f.read += int64(n)
		if err != io.EOF || f.read > 0 || f.info.Mode()&fs.ModeNamedPipe == 0 || len(p) == 0 {
			return n, err
		}
		if time.Since(f.opened) >= PipeIdle {
			return 0, fmt.Errorf("%s: %w: nothing was written to the named pipe within %s", f.f.Name(), os.ErrDeadlineExceeded, PipeIdle)
		}
		time.Sleep(pipePoll)
	}
}

// Rewind goes back to the start of a regular file.
func (f *File) Rewind() error {
	_, err := f.f.Seek(0, io.SeekStart)
	return err
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }
