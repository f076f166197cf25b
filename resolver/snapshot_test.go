package resolver

import (
	"testing"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShippedExampleConfigLoads(t *testing.T) {
	cfg, err := config.Load("../configs/dnsfence.yaml")
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	assert.Empty(t, snap.Warnings)
	require.Len(t, snap.Policies, 2)
	assert.True(t, snap.Policies[0].Blocks())
	assert.False(t, snap.Policies[1].Blocks())
	assert.Equal(t, "127.0.0.1:9153", cfg.HTTPAddr())
}
