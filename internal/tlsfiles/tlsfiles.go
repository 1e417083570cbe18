package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// recheck is how often the files are looked at again: at most once a
// second, at a handshake, so a rotated certificate is served within a
// second of being written and a busy port stats nothing in between.
const recheck = time.Second

// Files are a certificate, its key and a CA bundle on disk. Any may be ""
// (a client without a certificate, or one trusting the system's roots),
// but a certificate needs its key.
type Files struct {
	certPath, keyPath, caPath string
	log                       *slog.Logger

	mu      sync.Mutex
	checked time.Time
	stamps  [3]stamp
	cur     loaded
}

// loaded is one reading of the files.
type loaded struct {
	cert *tls.Certificate // nil without tls.cert
	pool *x509.CertPool   // nil without tls.ca: the system's roots
}

// stamp is what says a file changed.
type stamp struct {
	mod  time.Time
	size int64
}

// Load reads the files once: an error says which file is wrong and how.
// Later changes are read at the next handshake; a bad change is logged and
// the previous files stay in use.
func Load(cert, key, ca string, log *slog.Logger) (*Files, error) {
	if (cert == "") != (key == "") {
		return nil, errors.New("tls.cert and tls.key go together: set both, or neither")
	}
	if log == nil {
		log = slog.Default()
	}
	f := &Files{certPath: cert, keyPath: key, caPath: ca, log: log}
	stamps, cur, err := f.read()
	if err != nil {
		return nil, err
	}
	f.stamps, f.cur, f.checked = stamps, cur, time.Now()
	return f, nil
}

// HasCert reports whether the files include a certificate and key.
func (f *Files) HasCert() bool { return f.certPath != "" }

// HasCA reports whether the files include a CA bundle.
func (f *Files) HasCA() bool { return f.caPath != "" }

func (f *Files) paths() [3]string { return [3]string{f.certPath, f.keyPath, f.caPath} }

// read reads every file.
func (f *Files) read() ([3]stamp, loaded, error) {
	var stamps [3]stamp
	for i, p := range f.paths() {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return stamps, loaded{}, fmt.Errorf("tls: %w", err)
		}
		stamps[i] = stamp{fi.ModTime(), fi.Size()}
	}
	var l loaded
	if f.certPath != "" {
		c, err := tls.LoadX509KeyPair(f.certPath, f.keyPath)
		if err != nil {
			return stamps, loaded{}, fmt.Errorf("tls.cert %s and tls.key %s: %w", f.certPath, f.keyPath, err)
		}
		l.cert = &c
	}
	if f.caPath != "" {
		pem, err := os.ReadFile(f.caPath)
		if err != nil {
			return stamps, loaded{}, fmt.Errorf("tls.ca: %w", err)
		}
		l.pool = x509.NewCertPool()
		if !l.pool.AppendCertsFromPEM(pem) {
			return stamps, loaded{}, fmt.Errorf("tls.ca %s holds no PEM certificate", f.caPath)
		}
	}
	return stamps, l, nil
}

// current returns the files as they are now, reading them again if they
// changed since the last look.
func (f *Files) current() loaded {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) < recheck {
		return f.cur
	}
	f.checked = time.Now()
	changed := false
	for i, p := range f.paths() {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil || (stamp{fi.ModTime(), fi.Size()}) != f.stamps[i] {
			changed = true
		}
	}
	if !changed {
		return f.cur
	}
	stamps, cur, err := f.read()
	if err != nil {
		// Half-written files during a rotation look like this too: the
		// next look, a second later, tries again.
		f.log.Warn("TLS files changed but cannot be read; still using the previous ones", "error", err)
		return f.cur
	}
	f.stamps, f.cur = stamps, cur
	f.log.Info("TLS files changed: reloaded", "cert", f.certPath, "ca", f.caPath)
	return f.cur
}

// ClientAuth is whether a server asks its clients for certificates.
type ClientAuth int

const (
	// NoClientCert does not ask: clients authenticate with the token.
	NoClientCert ClientAuth = iota
	// RequireClientCert requires a certificate signed by the CA bundle
	// (mTLS).
	RequireClientCert
)

// Server is the TLS configuration for a port: the current certificate at
// each handshake, and with RequireClientCert, clients verified against the
// current CA bundle. The port speaks HTTP/2 (gRPC) and HTTP/1.1.
func (f *Files) Server(auth ClientAuth) (*tls.Config, error) {
	if !f.HasCert() {
		return nil, errors.New("a TLS port needs tls.cert and tls.key")
	}
	if auth == RequireClientCert && !f.HasCA() {
		return nil, errors.New("tls.client-auth: require needs tls.ca, the CA that signs client certificates")
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		l := f.current()
		c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: base.NextProtos, Certificates: []tls.Certificate{*l.cert}}
		if auth == RequireClientCert {
			c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, l.pool
		}
		return c, nil
	}
	return base, nil
}

// Client returns a TLS configuration for one connection to a node: the
// current CA bundle (the system's roots without one) and, if the files
// have one, the current certificate to present for mTLS.
func (f *Files) Client() *tls.Config {
	l := f.current()
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: l.pool}
	if l.cert != nil {
		c.Certificates = []tls.Certificate{*l.cert}
	}
	return c
}
