package configs

import (
	_ "embed" // for default.json
	"fmt"
	"os"
	"strings"
)

// defaultJSON is the configuration pier runs with when given none. A string,
// not a []byte, so no caller can change it.
//
//go:embed default.json
var defaultJSON string

// Parse parses, defaults and validates a configuration in zot's JSON format.
//
// Keys match case-insensitively. An unknown key, a value of the wrong type or
// an invalid value is an error naming the key's path, for example
//
//	storage.gcDelay: "1x" is not a duration (use Go durations like "1h", "90s")
//	http.tls.certt: unknown key (did you mean "cert"?)
//
// When there are several problems the error lists them all, one per line;
// each is a *KeyError, which errors.As finds.
//
// The warnings name the keys present in the file whose feature pier does not
// have yet, one per key, in a fixed order. Keys that would be unsafe to
// ignore are not among them: see Config.Refusals.
func Parse(data []byte) (*Config, []Warning, error) {
	var f fileConfig

	present, err := decode(data, &f)
	if err != nil {
		return nil, nil, err
	}

	if err := lowerSubPaths(&f, present); err != nil {
		return nil, nil, err
	}

	if err := validate(&f); err != nil {
		return nil, nil, err
	}

	cfg, err := resolve(&f)
	if err != nil {
		return nil, nil, err
	}

	cacheWarnings, err := resolveCaches(&f, cfg)
	if err != nil {
		return nil, nil, err
	}

	warnings, refusals := classify(&f, present)
	warnings = append(warnings, cacheWarnings...)
	cfg.refusals = refusals

	return cfg, warnings, nil
}

// Load reads the configuration file at path and parses it as Parse does. Its
// errors name the file.
func Load(path string) (*Config, []Warning, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}

	cfg, warnings, err := Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}

	return cfg, warnings, nil
}

// LoadPath is Load, or for an empty path the embedded default config.
func LoadPath(path string) (*Config, []Warning, error) {
	if path == "" {
		return Default(), nil, nil
	}
	return Load(path)
}

// Default returns the configuration pier runs with when given none: listen on
// 127.0.0.1:5000, store images in ./data (made absolute against the working
// directory now), everything else at its default. It is parsed from
// DefaultJSON, so it is exactly what that file says.
func Default() *Config {
	cfg, _, err := Parse([]byte(defaultJSON))
	if err != nil {
		// default.json ships inside the binary and the tests parse it.
		panic("configs: embedded default.json: " + err.Error())
	}

	return cfg
}

// DefaultJSON returns the text of the default configuration, for writing out
// as a starting point. The caller may modify the returned slice.
func DefaultJSON() []byte {
	return []byte(defaultJSON)
}

// lowerSubPaths lower-cases the subpath names, as zot does: its config
// loader (viper) lower-cases every key, so "/Team" in a zot config means
// "/team". Two names that differ only in case are one subpath twice. The
// keys found in the file are renamed too, so that every warning and
// refusal about a subpath's keys still applies.
func lowerSubPaths(f *fileConfig, present map[string]bool) error {
	if f.Storage == nil || f.Storage.SubPaths == nil {
		return nil
	}
	lowered := make(map[string]*fileStore, len(f.Storage.SubPaths))
	for _, name := range sortedKeys(f.Storage.SubPaths) {
		lower := strings.ToLower(name)
		if _, dup := lowered[lower]; dup {
			return &KeyError{Key: "storage.subPaths." + name, Message: "the same subpath as another key once lower-cased (zot reads keys in lower case)"}
		}
		lowered[lower] = f.Storage.SubPaths[name]
		if lower == name {
			continue
		}
		from, to := "storage.subPaths."+name, "storage.subPaths."+lower
		for key := range present {
			if key == from || strings.HasPrefix(key, from+".") {
				delete(present, key)
				present[to+strings.TrimPrefix(key, from)] = true
			}
		}
	}
	f.Storage.SubPaths = lowered
	return nil
}
