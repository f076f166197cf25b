package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestHTTPEndpointBoundsHeaders: a request whose header is larger than
// any scrape or probe sends is refused with 431, not read into memory up
// to net/http's default of 1 MiB; an ordinary one is served.
func TestHTTPEndpointBoundsHeaders(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	stop, err := serveHTTP(zap.New(core), "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	require.NoError(t, err)
	defer stop()
	listening := logs.FilterMessage("http endpoint listening").All()
	require.Len(t, listening, 1)
	url := "http://" + listening[0].ContextMap()["address"].(string) + "/metrics"

	get := func(header string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		require.NoError(t, err)
		req.Header.Set("X-Padding", header)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusOK, get("scrape"))
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, get(strings.Repeat("x", 64<<10)))
}
