package config

import (
	"fmt"
	"reflect"
)

// Changes names the configuration keys whose values differ between
// old and cfg: top-level keys, the keys of sections (`reload.max_shrink`),
// and per policy, by name, `policies[NAME].KEY`, `policies[NAME] added`
// and `policies[NAME] removed`.
func Changes(old, cfg *Config) []string {
	out := structChanges("", reflect.ValueOf(*old), reflect.ValueOf(*cfg), true)
	olds := map[string]reflect.Value{}
	for i := range old.Policies {
		olds[old.Policies[i].Name] = reflect.ValueOf(old.Policies[i])
	}
	seen := map[string]bool{}
	for i := range cfg.Policies {
		name := cfg.Policies[i].Name
		seen[name] = true
		o, ok := olds[name]
		if !ok {
			out = append(out, fmt.Sprintf("policies[%s] added", name))
			continue
		}
		out = append(out, structChanges(fmt.Sprintf("policies[%s].", name), o, reflect.ValueOf(cfg.Policies[i]), false)...)
	}
	for i := range old.Policies {
		if name := old.Policies[i].Name; !seen[name] {
			out = append(out, fmt.Sprintf("policies[%s] removed", name))
		}
	}
	return out
}

// structChanges compares the YAML keys of two structs of one type; with
// deep, a struct-valued key is compared key by key. policies is left to
// Changes.
func structChanges(prefix string, a, b reflect.Value, deep bool) []string {
	var out []string
	fields := yamlFields(a.Type())
	for _, key := range fieldNames(fields) {
		if key == "policies" {
			continue
		}
		f := fields[key]
		av, bv := a.FieldByIndex(f.Index), b.FieldByIndex(f.Index)
		if deep && f.Type.Kind() == reflect.Struct {
			out = append(out, structChanges(prefix+key+".", av, bv, false)...)
			continue
		}
		if !reflect.DeepEqual(av.Interface(), bv.Interface()) {
			out = append(out, prefix+key)
		}
	}
	return out
}
