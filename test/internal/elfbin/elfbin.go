// Package elfbin checks that a built pier is what a board needs: a static
// executable for the board's machine, loadable by the kernel alone.
package elfbin

import (
	"debug/elf"
	"fmt"
)

// CheckStatic opens the ELF file at path and reports why it is not a static
// executable for machine: a 64-bit or 32-bit mismatch, another machine, a
// PT_INTERP program header (it needs a dynamic loader, as a PIE or cgo
// binary does), a dynamic section, or a type other than ET_EXEC.
func CheckStatic(path string, machine elf.Machine) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var problems []string
	if f.Machine != machine {
		problems = append(problems, fmt.Sprintf("machine %v, want %v", f.Machine, machine))
	}
	wantClass := elf.ELFCLASS64
	if machine == elf.EM_ARM || machine == elf.EM_386 {
		wantClass = elf.ELFCLASS32
	}
	if f.Class != wantClass {
		problems = append(problems, fmt.Sprintf("class %v, want %v", f.Class, wantClass))
	}
	if f.Type != elf.ET_EXEC {
		problems = append(problems, fmt.Sprintf("type %v, want ET_EXEC (a PIE is ET_DYN)", f.Type))
	}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			problems = append(problems, "has PT_INTERP: needs a dynamic loader")
		case elf.PT_DYNAMIC:
			problems = append(problems, "has PT_DYNAMIC: dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		problems = append(problems, fmt.Sprintf("imports %v", libs))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %v", path, problems)
	}
	return nil
}
