package main

import (
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// ensureServingCert returns the serving certificate and key in dir, generating them on
// first use: a self-signed CA (ca.crt, the file clients trust) and a certificate it signs
// for 127.0.0.1, ::1 and localhost (apiserver.crt, with the CA appended; apiserver.key).
// Existing files are reused, so a restarted server keeps the same CA.
func ensureServingCert(dir string) (string, string, error) {
	certFile := filepath.Join(dir, "apiserver.crt")
	keyFile := filepath.Join(dir, "apiserver.key")
	caFile := filepath.Join(dir, "ca.crt")
	if exists(certFile) && exists(keyFile) && exists(caFile) {
		return certFile, keyFile, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("cert dir: %w", err)
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKeyWithOptions(certutil.SelfSignedCertKeyOptions{
		Host:         "127.0.0.1",
		AlternateIPs: []net.IP{net.ParseIP("::1")},
		AlternateDNS: []string{"localhost"},
		MaxAge:       10 * 365 * 24 * time.Hour,
	})
	if err != nil {
		return "", "", fmt.Errorf("generating a self-signed certificate: %w", err)
	}
	// certPEM is the serving certificate followed by the CA that signed it.
	var blocks []*pem.Block
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	if len(blocks) < 2 {
		return "", "", fmt.Errorf("generated certificate chain has %d certificates, want 2", len(blocks))
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{caFile, pem.EncodeToMemory(blocks[len(blocks)-1]), 0o644},
		{keyFile, keyPEM, 0o600},
		{certFile, certPEM, 0o644},
	} {
		if err := os.WriteFile(w.path+".tmp", w.data, w.mode); err != nil {
			return "", "", err
		}
		if err := os.Rename(w.path+".tmp", w.path); err != nil {
			return "", "", err
		}
	}
	return certFile, keyFile, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
