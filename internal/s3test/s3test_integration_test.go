//go:build integration

package s3test_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/s3blob" // registers s3://
	"gocloud.dev/gcerrors"

	"github.com/pagewire/pagewire/internal/s3test"
)

// openBucket opens the server's bucket as a backup would: gocloud's s3blob
// (the AWS SDK v2) at BucketURL, with the credentials of Env in the
// environment (t.Setenv: these tests do not run in parallel).
func openBucket(t *testing.T, srv *s3test.Server, env []string) *blob.Bucket {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	b, err := blob.OpenBucket(context.Background(), srv.BucketURL())
	if err != nil {
		t.Fatalf("open %s: %v", srv.BucketURL(), err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// The binary is the SeaweedFS release Version names.
func TestBinary_Version(t *testing.T) {
	bin, err := s3test.Binary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	release, _, _ := strings.Cut(s3test.Version, "-")
	if !strings.Contains(string(out), " "+release+" ") {
		t.Fatalf("%s version printed %q, want release %s", bin, out, release)
	}
}

func TestServer_S3(t *testing.T) {
	srv := s3test.Start(t)
	b := openBucket(t, srv, srv.Env())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The bucket is addressed by path (BucketURL's use_path_style), not as
	// a host name under 127.0.0.1.
	if u, err := url.Parse(srv.Endpoint); err != nil || net.ParseIP(u.Hostname()) == nil {
		t.Fatalf("Endpoint %q is not http://ip:port (%v)", srv.Endpoint, err)
	}

	t.Run("PutGetDelete", func(t *testing.T) {
		want := []byte("page 1 of db1")
		if err := b.WriteAll(ctx, "db1/page1", want, nil); err != nil {
			t.Fatal(err)
		}
		got, err := b.ReadAll(ctx, "db1/page1")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("ReadAll=%q, want %q", got, want)
		}
		if err := b.Delete(ctx, "db1/page1"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ReadAll(ctx, "db1/page1"); gcerrors.Code(err) != gcerrors.NotFound {
			t.Fatalf("ReadAll after Delete: %v, want NotFound", err)
		}
		if err := b.Delete(ctx, "db1/page1"); gcerrors.Code(err) != gcerrors.NotFound {
			t.Fatalf("Delete of a deleted key: %v, want NotFound", err)
		}
	})

	t.Run("List", func(t *testing.T) {
		for _, key := range []string{"list/a/1", "list/a/2", "list/b/1", "lister"} {
			if err := b.WriteAll(ctx, key, []byte(key), nil); err != nil {
				t.Fatal(err)
			}
		}
		list := func(opts *blob.ListOptions) string {
			var got []string
			it := b.List(opts)
			for {
				obj, err := it.Next(ctx)
				if err == io.EOF {
					return strings.Join(got, " ")
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%s:%d", obj.Key, obj.Size))
			}
		}
		if got, want := list(&blob.ListOptions{Prefix: "list/a/"}), "list/a/1:8 list/a/2:8"; got != want {
			t.Errorf("List(prefix list/a/)=%s, want %s", got, want)
		}
		if got, want := list(&blob.ListOptions{Prefix: "list", Delimiter: "/"}), "list/:0 lister:6"; got != want {
			t.Errorf("List(prefix list, delimiter /)=%s, want %s", got, want)
		}
	})

	// s3blob hands writes to the AWS transfer manager, which uploads an
	// object of 16 MiB or more in parts of 8 MiB: 20 MiB takes three, and
	// S3 gives the object an ETag of the form "md5-of-md5s-3".
	big := randomBytes(t, 20<<20)
	t.Run("Multipart", func(t *testing.T) {
		if err := b.WriteAll(ctx, "big", big, nil); err != nil {
			t.Fatal(err)
		}
		attrs, err := b.Attributes(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		if attrs.Size != int64(len(big)) {
			t.Fatalf("Size=%d, want %d", attrs.Size, len(big))
		}
		if !strings.HasSuffix(attrs.ETag, "-3\"") {
			t.Errorf("ETag=%s, want a multipart upload's, of 3 parts", attrs.ETag)
		}
		got, err := b.ReadAll(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, big) {
			t.Fatalf("ReadAll(big) differs from what was written (%d bytes read)", len(got))
		}
		const off, n = 8<<20 - 12345, 100000 // across the first part's end
		r, err := b.NewRangeReader(ctx, "big", off, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, big[off:off+n]) {
			t.Fatalf("NewRangeReader(%d, %d) read %d bytes, not the ones written (%v)", off, n, len(got), err)
		}
	})

	// Observed on SeaweedFS 4.53 (7506e5f91cd6): it honours If-None-Match: *
	// (WriterOptions.IfNotExist) on PutObject and on
	// CompleteMultipartUpload. A write to an existing key fails with 412
	// PreconditionFailed, which gocloud reports as FailedPrecondition, and
	// leaves the object as it was.
	t.Run("IfNotExist", func(t *testing.T) {
		ifNotExist := &blob.WriterOptions{IfNotExist: true}
		if err := b.WriteAll(ctx, "fence/epoch", []byte("1"), ifNotExist); err != nil {
			t.Fatalf("first write with IfNotExist: %v", err)
		}
		err := b.WriteAll(ctx, "fence/epoch", []byte("2"), ifNotExist)
		if code := gcerrors.Code(err); code != gcerrors.FailedPrecondition {
			t.Fatalf("second write with IfNotExist: %v (code %v), want FailedPrecondition", err, code)
		}
		if got, err := b.ReadAll(ctx, "fence/epoch"); err != nil || string(got) != "1" {
			t.Fatalf("after the refused write: %q, %v; want \"1\"", got, err)
		}

		err = b.WriteAll(ctx, "big", randomBytes(t, 17<<20), ifNotExist)
		if code := gcerrors.Code(err); code != gcerrors.FailedPrecondition {
			t.Fatalf("multipart write with IfNotExist to an existing key: %v (code %v), want FailedPrecondition", err, code)
		}
		if got, err := b.ReadAll(ctx, "big"); err != nil || !bytes.Equal(got, big) {
			t.Fatalf("big changed after the refused multipart write (%d bytes, %v)", len(got), err)
		}
	})

	// Observed likewise: of writers racing with IfNotExist to one key,
	// exactly one wins and the rest get FailedPrecondition; the winner's
	// bytes are what is stored.
	t.Run("IfNotExistRace", func(t *testing.T) {
		const rounds, writers = 5, 8
		for round := range rounds {
			key := fmt.Sprintf("race/%d", round)
			var wg sync.WaitGroup
			errs := make([]error, writers)
			for w := range writers {
				wg.Go(func() {
					errs[w] = b.WriteAll(ctx, key, []byte{byte(w)}, &blob.WriterOptions{IfNotExist: true})
				})
			}
			wg.Wait()
			winner := -1
			for w, err := range errs {
				switch gcerrors.Code(err) {
				case gcerrors.OK:
					if winner >= 0 {
						t.Fatalf("%s: writers %d and %d both succeeded", key, winner, w)
					}
					winner = w
				case gcerrors.FailedPrecondition:
				default:
					t.Fatalf("%s: writer %d: %v", key, w, err)
				}
			}
			if winner < 0 {
				t.Fatalf("%s: no writer succeeded", key)
			}
			if got, err := b.ReadAll(ctx, key); err != nil || !bytes.Equal(got, []byte{byte(winner)}) {
				t.Fatalf("%s=%v, %v; want the winner's %d", key, got, err, winner)
			}
		}
	})
}

// Requests must be signed with the server's key: a wrong secret is refused.
func TestServer_RefusesWrongKey(t *testing.T) {
	srv := s3test.Start(t)
	env := srv.Env()
	for i, kv := range env {
		if strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=") {
			env[i] = "AWS_SECRET_ACCESS_KEY=not-" + srv.SecretKey
		}
	}
	b := openBucket(t, srv, env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// gocloud reports S3's 403 SignatureDoesNotMatch as gcerrors.Unknown:
	// look at the S3 error itself.
	err := b.WriteAll(ctx, "k", []byte("v"), nil)
	var apiErr smithy.APIError
	if !b.ErrorAs(err, &apiErr) || apiErr.ErrorCode() != "SignatureDoesNotMatch" {
		t.Fatalf("WriteAll with a wrong secret key: %v, want S3 error SignatureDoesNotMatch", err)
	}
}

func TestServer_StopRestart(t *testing.T) {
	srv := s3test.Start(t)
	b := openBucket(t, srv, srv.Env())
	ctx := context.Background()
	if err := b.WriteAll(ctx, "kept", []byte("before the stop"), nil); err != nil {
		t.Fatal(err)
	}

	// Stopped: calls fail, within their deadline (the SDK retries a refused
	// connection, so the deadline may be what ends them).
	srv.Stop()
	srv.Stop() // does nothing
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := b.ReadAll(short, "kept"); err == nil {
		t.Fatal("ReadAll succeeded with the server stopped")
	}
	if err := b.WriteAll(short, "lost", []byte("x"), nil); err == nil {
		t.Fatal("WriteAll succeeded with the server stopped")
	}

	// Restarted on the same endpoint and data: the object is there, and
	// the same *blob.Bucket works again.
	srv.Restart(t)
	got, err := b.ReadAll(ctx, "kept")
	if err != nil {
		t.Fatalf("ReadAll after Restart: %v", err)
	}
	if string(got) != "before the stop" {
		t.Fatalf("ReadAll after Restart=%q, want %q", got, "before the stop")
	}
	if err := b.WriteAll(ctx, "after", []byte("y"), nil); err != nil {
		t.Fatalf("WriteAll after Restart: %v", err)
	}
	if _, err := b.ReadAll(ctx, "lost"); gcerrors.Code(err) != gcerrors.NotFound {
		t.Fatalf("ReadAll of the write made while stopped: %v, want NotFound", err)
	}
}

// The server stops when the test that started it ends (in t.Cleanup, which
// runs whether the test passes or fails): nothing answers on its endpoint
// afterwards.
func TestStart_StopsWhenTestEnds(t *testing.T) {
	var endpoint string
	t.Run("inner", func(t *testing.T) {
		endpoint = s3test.Start(t).Endpoint
	})
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still answers after the test that started it ended", endpoint)
	}
}
