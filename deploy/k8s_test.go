package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The Kubernetes manifests in k8s/ are checked here without a cluster:
// every document is decoded strictly into the Kubernetes API type its
// apiVersion and kind name, and the objects' cross-references (selectors,
// ports, peers, volumes, addresses, flags) are checked against each other
// and against the real gencluster command line.

const (
	k8sDir = "k8s"
	// imageUID is the user and group the image runs as (Dockerfile).
	imageUID = 65532
	// minGrace is the least termination grace a coordinator needs to hand
	// its lead over, and a worker to leave the ring.
	minGrace = 15
)

// manifests are the decoded objects of k8s/.
type manifests struct {
	services  []service
	workloads []*workload
	pdbs      []pdb
	seen      map[string]string // "Kind/name" → where it is defined
}

type service struct {
	where string // "file: Service name"
	*corev1.Service
}

type pdb struct {
	where string
	*policyv1.PodDisruptionBudget
}

// workload is anything with a pod template: a StatefulSet, Deployment or Job.
type workload struct {
	where      string
	kind, name string
	replicas   int
	selector   *metav1.LabelSelector // nil for a Job (its selector is generated)
	template   *corev1.PodTemplateSpec
	claims     []corev1.PersistentVolumeClaim
	sts        *appsv1.StatefulSet // nil unless a StatefulSet
	containers []container         // init containers first
}

// container is one container of a workload with its parsed command line.
type container struct {
	where string // "file: Kind name, container c"
	*corev1.Container
	cmd commandLine
}

// commandLine is a container's gencluster command line.
type commandLine struct {
	sub   string            // the subcommand, e.g. "coordinator" or "checkpoint list"
	flags map[string]string // flag name (no dashes) → value ("" for a bare --flag)
}

// newStrictDecoder decodes a YAML document into the typed object of its
// apiVersion and kind (core/v1, apps/v1, policy/v1, batch/v1), failing on
// unknown and duplicate fields.
func newStrictDecoder() (runtime.Decoder, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, batchv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Yaml: true, Strict: true}), nil
}

// loadManifests decodes every *.yaml in dir.
func loadManifests(dir string) (*manifests, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.yaml in %s", dir)
	}
	dec, err := newStrictDecoder()
	if err != nil {
		return nil, err
	}
	m := &manifests{}
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		docs, err := splitDocuments(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for i, doc := range docs {
			if err := m.addDocument(dec, filepath.Base(f), doc); err != nil {
				errs = append(errs, fmt.Errorf("%s, document %d: %w", filepath.Base(f), i+1, err))
			}
		}
	}
	return m, errors.Join(errs...)
}

// splitDocuments splits a YAML stream at its "---" lines, leaving out
// documents that hold only comments.
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if !onlyComments(doc) {
			docs = append(docs, doc)
		}
	}
}

func onlyComments(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && l != "---" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// addDocument decodes one document strictly and files the object.
func (m *manifests) addDocument(dec runtime.Decoder, file string, doc []byte) error {
	obj, gvk, err := dec.Decode(doc, nil, nil)
	if err != nil {
		return err
	}
	acc, err := meta.Accessor(obj)
	if err != nil {
		return err
	}
	where := fmt.Sprintf("%s: %s %s", file, gvk.Kind, acc.GetName())
	if acc.GetName() == "" {
		return fmt.Errorf("%s has no name", where)
	}
	if ns := acc.GetNamespace(); ns != "" {
		return fmt.Errorf("%s: namespace %q (the manifests are namespace-less: kubectl apply -n NS)", where, ns)
	}
	key := gvk.Kind + "/" + acc.GetName()
	if prev, dup := m.seen[key]; dup {
		return fmt.Errorf("%s: defined again (first in %s)", where, prev)
	}
	if m.seen == nil {
		m.seen = map[string]string{}
	}
	m.seen[key] = where
	switch o := obj.(type) {
	case *corev1.Service:
		m.services = append(m.services, service{where, o})
	case *policyv1.PodDisruptionBudget:
		m.pdbs = append(m.pdbs, pdb{where, o})
	case *appsv1.StatefulSet:
		return m.addWorkload(&workload{where: where, kind: gvk.Kind, name: o.Name, replicas: replicas(o.Spec.Replicas),
			selector: o.Spec.Selector, template: &o.Spec.Template, claims: o.Spec.VolumeClaimTemplates, sts: o})
	case *appsv1.Deployment:
		return m.addWorkload(&workload{where: where, kind: gvk.Kind, name: o.Name, replicas: replicas(o.Spec.Replicas),
			selector: o.Spec.Selector, template: &o.Spec.Template})
	case *batchv1.Job:
		return m.addWorkload(&workload{where: where, kind: gvk.Kind, name: o.Name, replicas: 1, template: &o.Spec.Template})
	default:
		return fmt.Errorf("%s: kind %s is not one these checks know (Service, StatefulSet, Deployment, Job, PodDisruptionBudget)", where, gvk)
	}
	return nil
}

func replicas(r *int32) int {
	if r == nil {
		return 1
	}
	return int(*r)
}

func (m *manifests) addWorkload(w *workload) error {
	spec := &w.template.Spec
	var cs []*corev1.Container
	for i := range spec.InitContainers {
		cs = append(cs, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		cs = append(cs, &spec.Containers[i])
	}
	for _, c := range cs {
		where := fmt.Sprintf("%s, container %s", w.where, c.Name)
		cmd, err := parseCommandLine(c)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		w.containers = append(w.containers, container{where, c, cmd})
	}
	m.workloads = append(m.workloads, w)
	return nil
}

// parseCommandLine reads a container's command and args as a gencluster
// command line: the image's entrypoint is gencluster, so args start with
// the subcommand; a command, if given, must be gencluster itself.
func parseCommandLine(c *corev1.Container) (commandLine, error) {
	argv := append(slices.Clone(c.Command), c.Args...)
	if len(c.Command) > 0 {
		if path.Base(c.Command[0]) != "gencluster" {
			return commandLine{}, fmt.Errorf("command %q is not gencluster", c.Command[0])
		}
		argv = argv[1:]
	}
	var sub []string
	for len(argv) > 0 && !strings.HasPrefix(argv[0], "-") {
		sub, argv = append(sub, argv[0]), argv[1:]
	}
	if len(sub) == 0 {
		return commandLine{}, errors.New("args name no gencluster subcommand")
	}
	cl := commandLine{sub: strings.Join(sub, " "), flags: map[string]string{}}
	for len(argv) > 0 {
		arg := argv[0]
		argv = argv[1:]
		name, ok := strings.CutPrefix(arg, "--")
		if !ok || name == "" {
			return commandLine{}, fmt.Errorf("argument %q: want --flag or --flag=value", arg)
		}
		name, value, inline := strings.Cut(name, "=")
		if !inline && len(argv) > 0 && !strings.HasPrefix(argv[0], "-") {
			value, argv = argv[0], argv[1:]
		}
		if _, dup := cl.flags[name]; dup {
			return commandLine{}, fmt.Errorf("--%s is given twice", name)
		}
		cl.flags[name] = value
	}
	return cl, nil
}

// report collects a check's problems, each naming where it is.
type report []string

func (r *report) add(where, format string, args ...any) {
	*r = append(*r, where+": "+fmt.Sprintf(format, args...))
}

// selects reports whether a non-empty selector matches the labels.
func selects(sel *metav1.LabelSelector, lbls map[string]string) bool {
	if sel == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(lbls))
}

// selected lists the workloads whose pods sel selects.
func (m *manifests) selected(sel *metav1.LabelSelector) []*workload {
	var ws []*workload
	for _, w := range m.workloads {
		if selects(sel, w.template.Labels) {
			ws = append(ws, w)
		}
	}
	return ws
}

func names(ws []*workload) string {
	var s []string
	for _, w := range ws {
		s = append(s, w.kind+" "+w.name)
	}
	return strings.Join(s, ", ")
}

func (m *manifests) service(name string) *service {
	for i := range m.services {
		if m.services[i].Name == name {
			return &m.services[i]
		}
	}
	return nil
}

func (m *manifests) workload(name string) *workload {
	for _, w := range m.workloads {
		if w.name == name {
			return w
		}
	}
	return nil
}

// backend is the one workload a Service selects, or why there is none.
func (m *manifests) backend(s *service) (*workload, error) {
	if len(s.Spec.Selector) == 0 {
		return nil, errors.New("has no selector")
	}
	ws := m.selected(&metav1.LabelSelector{MatchLabels: s.Spec.Selector})
	switch {
	case len(ws) != 1:
		return nil, fmt.Errorf("selector %v matches the pods of %d workloads (%s), want exactly one", s.Spec.Selector, len(ws), names(ws))
	case ws[0].kind == "Job":
		return nil, fmt.Errorf("selects the pods of %s, a Job", ws[0].where)
	}
	return ws[0], nil
}

func headless(s *service) bool { return s.Spec.ClusterIP == corev1.ClusterIPNone }

// containerPort resolves a port given by number or name among cs's ports.
func containerPort(cs []container, p intstr.IntOrString) (int32, bool) {
	for _, c := range cs {
		for _, cp := range c.Ports {
			if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func hasPort(cs []container, p intstr.IntOrString) bool {
	_, ok := containerPort(cs, p)
	return ok
}

// targetPort is where a Service port sends its traffic (the port itself
// when no targetPort is given).
func targetPort(p corev1.ServicePort) intstr.IntOrString {
	if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 {
		return intstr.FromInt32(p.Port)
	}
	return p.TargetPort
}

// checkServices: every Service selects the pods of exactly one workload,
// and every targetPort is one of their container ports.
func checkServices(m *manifests) report {
	var r report
	for i := range m.services {
		s := &m.services[i]
		w, err := m.backend(s)
		if err != nil {
			r.add(s.where, "%v", err)
			continue
		}
		for _, p := range s.Spec.Ports {
			if tp := targetPort(p); !hasPort(w.containers, tp) {
				r.add(s.where, "port %q: targetPort %s is no containerPort of %s", p.Name, tp.String(), w.where)
			}
		}
	}
	return r
}

// checkSelectors: every StatefulSet and Deployment selects its own pods,
// and a StatefulSet's serviceName is a headless Service that publishes
// its pods before they are ready.
func checkSelectors(m *manifests) report {
	var r report
	for _, w := range m.workloads {
		if w.kind != "Job" && !selects(w.selector, w.template.Labels) {
			r.add(w.where, "selector %v does not match the template's labels %v", w.selector, w.template.Labels)
		}
		if w.sts == nil {
			continue
		}
		s := m.service(w.sts.Spec.ServiceName)
		switch {
		case s == nil:
			r.add(w.where, "serviceName %q names no Service", w.sts.Spec.ServiceName)
		case !headless(s):
			r.add(w.where, "serviceName %q: %s is not headless (clusterIP: None)", w.sts.Spec.ServiceName, s.where)
		case !s.Spec.PublishNotReadyAddresses:
			r.add(w.where, "serviceName %q: %s does not publish not-ready pods (publishNotReadyAddresses: true)", w.sts.Spec.ServiceName, s.where)
		case !selects(&metav1.LabelSelector{MatchLabels: s.Spec.Selector}, w.template.Labels):
			r.add(w.where, "serviceName %q: %s does not select this StatefulSet's pods", w.sts.Spec.ServiceName, s.where)
		}
	}
	return r
}

func probePort(p *corev1.Probe) (intstr.IntOrString, bool) {
	switch {
	case p.HTTPGet != nil:
		return p.HTTPGet.Port, true
	case p.TCPSocket != nil:
		return p.TCPSocket.Port, true
	case p.GRPC != nil:
		return intstr.FromInt32(p.GRPC.Port), true
	}
	return intstr.IntOrString{}, false
}

// checkProbes: every probe's port is a port of its container; a probe of
// /livez or /readyz goes to the --http port; long-running containers are
// ready on /readyz and have a liveness probe that is not /readyz (a
// coordinator waiting for a quorum is unready, not dead).
func checkProbes(m *manifests) report {
	var r report
	for _, w := range m.workloads {
		for _, c := range w.containers {
			probes := map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe}
			for _, kind := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
				p := probes[kind]
				if p == nil {
					continue
				}
				port, ok := probePort(p)
				if !ok {
					continue
				}
				n, ok := containerPort([]container{c}, port)
				if !ok {
					r.add(c.where, "%s port %s is no containerPort", kind, port.String())
					continue
				}
				if g := p.HTTPGet; g != nil && (g.Path == "/livez" || g.Path == "/readyz") {
					if _, hp, err := net.SplitHostPort(c.cmd.flags["http"]); err != nil || hp != strconv.Itoa(int(n)) {
						r.add(c.where, "%s %s on port %d, but --http is %q", kind, g.Path, n, c.cmd.flags["http"])
					}
				}
			}
			if w.kind == "Job" {
				continue
			}
			if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
				r.add(c.where, "readinessProbe: want httpGet /readyz")
			}
			if p := c.LivenessProbe; p == nil {
				r.add(c.where, "no livenessProbe")
			} else if p.HTTPGet != nil && p.HTTPGet.Path == "/readyz" {
				r.add(c.where, "livenessProbe on /readyz would kill a coordinator waiting for a quorum")
			}
		}
	}
	return r
}

// portOf is the port number of a host:port flag.
func portOf(hostport string) (host string, port int32, err error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q of %q: not a number", p, hostport)
	}
	return host, int32(n), nil
}

// namedPort is the containerPort called name, if any.
func namedPort(c container, name string) (int32, bool) {
	return containerPort([]container{c}, intstr.FromString(name))
}

// checkListenPorts: --listen and --http listen on all interfaces on the
// containerPorts named grpc and http, and --advertise gives the --listen
// port.
func checkListenPorts(m *manifests) report {
	var r report
	for _, w := range m.workloads {
		for _, c := range w.containers {
			for _, fp := range [][2]string{{"listen", "grpc"}, {"http", "http"}} {
				flag, portName := fp[0], fp[1]
				want, named := namedPort(c, portName)
				v, set := c.cmd.flags[flag]
				switch {
				case !set && named:
					r.add(c.where, "containerPort %s (%d) but no --%s", portName, want, flag)
					continue
				case !set:
					continue
				}
				host, port, err := portOf(v)
				switch {
				case err != nil:
					r.add(c.where, "--%s %q: %v", flag, v, err)
				case !named:
					r.add(c.where, "--%s %q but no containerPort named %s", flag, v, portName)
				case port != want:
					r.add(c.where, "--%s port %d is not containerPort %s (%d)", flag, port, portName, want)
				}
				if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
					r.add(c.where, "--%s %q listens on loopback only: probes and peers cannot reach it", flag, v)
				}
			}
			if adv, ok := c.cmd.flags["advertise"]; ok {
				_, ap, err1 := portOf(adv)
				_, lp, err2 := portOf(c.cmd.flags["listen"])
				if err := errors.Join(err1, err2); err != nil || ap != lp {
					r.add(c.where, "--advertise %q does not give the --listen port (%q): %v", adv, c.cmd.flags["listen"], err)
				}
			}
		}
	}
	return r
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// podNameRef checks that ref is exactly $(VAR) for an env var set from the
// downward API's metadata.name.
func podNameRef(c container, ref string) error {
	sm := envRef.FindStringSubmatch(ref)
	if sm == nil || sm[0] != ref {
		return fmt.Errorf("%q is not $(VAR)", ref)
	}
	for _, e := range c.Env {
		if e.Name == sm[1] {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				return fmt.Errorf("env %s is not the downward API's metadata.name", e.Name)
			}
			return nil
		}
	}
	return fmt.Errorf("no env %s", sm[1])
}

// checkPodIdentity: every $(VAR) in args is an env var of the container;
// a StatefulSet's --id is its pod name and its --advertise the pod's
// stable name under the StatefulSet's headless Service.
func checkPodIdentity(m *manifests) report {
	var r report
	for _, w := range m.workloads {
		for _, c := range w.containers {
			for _, arg := range append(slices.Clone(c.Command), c.Args...) {
				for _, sm := range envRef.FindAllStringSubmatch(arg, -1) {
					if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == sm[1] }) {
						r.add(c.where, "argument %q refers to $(%s), which is no env var of the container (Kubernetes leaves it unexpanded)", arg, sm[1])
					}
				}
			}
			if w.sts == nil {
				continue
			}
			if id, ok := c.cmd.flags["id"]; ok {
				if err := podNameRef(c, id); err != nil {
					r.add(c.where, "--id: want the pod name, $(POD_NAME) from the downward API: %v", err)
				}
			}
			_, listening := c.cmd.flags["listen"]
			adv, ok := c.cmd.flags["advertise"]
			if !ok {
				if listening {
					r.add(c.where, "--listen but no --advertise: give the pod's stable name $(POD_NAME).%s", w.sts.Spec.ServiceName)
				}
				continue
			}
			host, _, err := net.SplitHostPort(adv)
			ref, svc, _ := strings.Cut(host, ".")
			if err == nil {
				err = podNameRef(c, ref)
			}
			if err != nil || svc != w.sts.Spec.ServiceName {
				r.add(c.where, "--advertise %q: want $(POD_NAME).%s:PORT (%v)", adv, w.sts.Spec.ServiceName, err)
			}
		}
	}
	return r
}

// coordinators lists the containers that run `gencluster coordinator`,
// with their workloads.
func (m *manifests) coordinators() (ws []*workload, cs []container) {
	for _, w := range m.workloads {
		for _, c := range w.containers {
			if c.cmd.sub == "coordinator" {
				ws, cs = append(ws, w), append(cs, c)
			}
		}
	}
	return ws, cs
}

// checkPeers: the coordinators' --peers is exactly
// <sts>-<i>=<sts>-<i>.<headless svc>:<grpc port> for every replica i.
func checkPeers(m *manifests) report {
	var r report
	ws, cs := m.coordinators()
	if len(cs) == 0 {
		r.add(k8sDir, "no container runs gencluster coordinator")
	}
	for i, c := range cs {
		w := ws[i]
		if w.sts == nil {
			r.add(c.where, "coordinators need a StatefulSet (stable names and data)")
			continue
		}
		_, port, err := portOf(c.cmd.flags["listen"])
		if err != nil {
			r.add(c.where, "--listen: %v", err)
			continue
		}
		peers, ok := c.cmd.flags["peers"]
		if !ok {
			r.add(c.where, "no --peers: the group cannot bootstrap")
			continue
		}
		got := map[string]string{}
		for p := range strings.SplitSeq(peers, ",") {
			id, addr, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok {
				r.add(c.where, "--peers entry %q: want id=host:port", p)
				continue
			}
			if _, dup := got[id]; dup {
				r.add(c.where, "--peers lists %s twice", id)
			}
			got[id] = addr
		}
		for ord := range w.replicas {
			id := fmt.Sprintf("%s-%d", w.name, ord)
			want := fmt.Sprintf("%s.%s:%d", id, w.sts.Spec.ServiceName, port)
			addr, ok := got[id]
			switch {
			case !ok:
				r.add(c.where, "--peers lacks pod %s (want %s=%s)", id, id, want)
			case addr != want:
				r.add(c.where, "--peers gives %s=%s, want %s=%s", id, addr, id, want)
			}
			delete(got, id)
		}
		for id, addr := range got {
			r.add(c.where, "--peers lists %s=%s, which is none of the %d pods of %s", id, addr, w.replicas, w.where)
		}
	}
	return r
}

// checkQuorum: coordinators run an odd number of replicas, start in
// parallel, spread over nodes, and a PodDisruptionBudget keeps a quorum
// through voluntary disruptions; every PDB selects one workload's pods.
func checkQuorum(m *manifests) report {
	var r report
	for _, p := range m.pdbs {
		if ws := m.selected(p.Spec.Selector); len(ws) != 1 {
			r.add(p.where, "selector matches the pods of %d workloads (%s), want exactly one", len(ws), names(ws))
		}
	}
	ws, _ := m.coordinators()
	for _, w := range ws {
		if w.replicas%2 == 0 {
			r.add(w.where, "replicas %d: a raft group wants an odd number", w.replicas)
		}
		if w.sts != nil && w.sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			r.add(w.where, "podManagementPolicy %q: want Parallel (OrderedReady waits for a leader that needs the pods it holds back)", w.sts.Spec.PodManagementPolicy)
		}
		if !requiredHostAntiAffinity(w) {
			r.add(w.where, "no required podAntiAffinity on kubernetes.io/hostname selecting its own pods: one node could hold a quorum")
		}
		var budgets []pdb
		for _, p := range m.pdbs {
			if selects(p.Spec.Selector, w.template.Labels) {
				budgets = append(budgets, p)
			}
		}
		if len(budgets) != 1 {
			r.add(w.where, "%d PodDisruptionBudgets select its pods, want one", len(budgets))
			continue
		}
		if err := keepsQuorum(budgets[0].PodDisruptionBudget, w.replicas); err != nil {
			r.add(budgets[0].where, "%v", err)
		}
	}
	return r
}

func requiredHostAntiAffinity(w *workload) bool {
	a := w.template.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil {
		return false
	}
	for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		if term.TopologyKey == corev1.LabelHostname && selects(term.LabelSelector, w.template.Labels) {
			return true
		}
	}
	return false
}

// keepsQuorum checks that the budget keeps a majority of replicas up but
// still lets one go.
func keepsQuorum(p *policyv1.PodDisruptionBudget, replicas int) error {
	quorum := replicas/2 + 1
	var up int
	switch minAvail, maxUnavail := p.Spec.MinAvailable, p.Spec.MaxUnavailable; {
	case minAvail != nil && maxUnavail != nil:
		return errors.New("both minAvailable and maxUnavailable")
	case minAvail != nil:
		n, err := intstr.GetScaledValueFromIntOrPercent(minAvail, replicas, true)
		if err != nil {
			return fmt.Errorf("minAvailable: %w", err)
		}
		up = n
	case maxUnavail != nil:
		n, err := intstr.GetScaledValueFromIntOrPercent(maxUnavail, replicas, true)
		if err != nil {
			return fmt.Errorf("maxUnavailable: %w", err)
		}
		up = replicas - n
	default:
		return errors.New("neither minAvailable nor maxUnavailable")
	}
	switch {
	case up < quorum:
		return fmt.Errorf("keeps %d of %d coordinators up, fewer than a quorum of %d", up, replicas, quorum)
	case up >= replicas:
		return fmt.Errorf("keeps all %d coordinators up: it blocks every drain", replicas)
	}
	return nil
}

// mountFor is the volume mount that holds dir: the one with the longest
// mountPath that is dir or a parent of it.
func mountFor(c container, dir string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	dir = path.Clean(dir)
	for i, vm := range c.VolumeMounts {
		mp := path.Clean(vm.MountPath)
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && (best == nil || len(mp) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	return best
}

// checkVolumes: every volumeMount names a volume or a claim template and
// every volume is mounted; a --data-dir lives on a StatefulSet's
// persistent claim that requests storage; a read-only root has a /tmp
// mount.
func checkVolumes(m *manifests) report {
	var r report
	for _, w := range m.workloads {
		kinds := map[string]string{} // volume name → "volume" or "claim"
		for _, v := range w.template.Spec.Volumes {
			kinds[v.Name] = "volume"
		}
		for _, pvc := range w.claims {
			if _, dup := kinds[pvc.Name]; dup {
				r.add(w.where, "%q is both a volume and a volumeClaimTemplate", pvc.Name)
			}
			kinds[pvc.Name] = "claim"
			if _, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
				r.add(w.where, "volumeClaimTemplate %q requests no storage", pvc.Name)
			}
		}
		used := map[string]bool{}
		for _, c := range w.containers {
			for _, vm := range c.VolumeMounts {
				used[vm.Name] = true
				if _, ok := kinds[vm.Name]; !ok {
					r.add(c.where, "volumeMount %q (%s) names no volume or volumeClaimTemplate", vm.Name, vm.MountPath)
				}
			}
			if dir, ok := c.cmd.flags["data-dir"]; ok {
				if vm := mountFor(c, dir); vm == nil || kinds[vm.Name] != "claim" {
					r.add(c.where, "--data-dir %s is not on a volumeClaimTemplate: the pod would lose its state", dir)
				}
			}
			if sc := c.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem && mountFor(c, "/tmp") == nil {
				r.add(c.where, "readOnlyRootFilesystem without a /tmp mount")
			}
		}
		for name := range kinds {
			if !used[name] {
				r.add(w.where, "%s %q is mounted by no container", kinds[name], name)
			}
		}
	}
	return r
}

// resolveAddr finds what host:port reaches, as a gencluster client dials
// it from a pod in the same namespace: a Service ("svc:port", a Service
// port, or a container port when headless) or one StatefulSet pod by its
// stable name ("pod.svc:port", a container port). It returns the workload
// and the container port.
func (m *manifests) resolveAddr(addr string) (*workload, int32, error) {
	host, port, err := portOf(addr)
	if err != nil {
		return nil, 0, err
	}
	pod, svcName, podForm := strings.Cut(host, ".")
	if !podForm {
		svcName = host
	}
	s := m.service(svcName)
	if s == nil {
		return nil, 0, fmt.Errorf("%q names no Service", svcName)
	}
	w, err := m.backend(s)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %v", s.where, err)
	}
	switch {
	case podForm && (!headless(s) || w.sts == nil || w.sts.Spec.ServiceName != svcName):
		return nil, 0, fmt.Errorf("%q: pod names resolve only under a StatefulSet's headless serviceName, which %s is not", host, s.where)
	case podForm:
		ord, ok := strings.CutPrefix(pod, w.name+"-")
		if n, err := strconv.Atoi(ord); !ok || err != nil || n < 0 || n >= w.replicas {
			return nil, 0, fmt.Errorf("%q is none of the %d pods of %s", pod, w.replicas, w.where)
		}
		fallthrough
	case headless(s):
		if _, ok := containerPort(w.containers, intstr.FromInt32(port)); !ok {
			return nil, 0, fmt.Errorf("port %d is no containerPort of %s", port, w.where)
		}
		return w, port, nil
	}
	for _, p := range s.Spec.Ports {
		if p.Port == port {
			n, ok := containerPort(w.containers, targetPort(p))
			if !ok {
				return nil, 0, fmt.Errorf("%s port %d targets no containerPort", s.where, port)
			}
			return w, n, nil
		}
	}
	return nil, 0, fmt.Errorf("port %d is no port of %s", port, s.where)
}

// checkAddresses: every --join and --coordinator address reaches the
// gRPC port (--listen) of a coordinator.
func checkAddresses(m *manifests) report {
	var r report
	for _, w := range m.workloads {
		for _, c := range w.containers {
			for _, flag := range []string{"join", "coordinator"} {
				v, ok := c.cmd.flags[flag]
				if !ok {
					continue
				}
				for addr := range strings.SplitSeq(v, ",") {
					if err := m.reachesCoordinator(addr); err != nil {
						r.add(c.where, "--%s address %q: %v", flag, addr, err)
					}
				}
			}
		}
	}
	return r
}

func (m *manifests) reachesCoordinator(addr string) error {
	w, port, err := m.resolveAddr(strings.TrimSpace(addr))
	if err != nil {
		return err
	}
	for _, c := range w.containers {
		if _, lp, err := portOf(c.cmd.flags["listen"]); c.cmd.sub == "coordinator" && err == nil && lp == port {
			return nil
		}
	}
	return fmt.Errorf("reaches port %d of %s, which is no coordinator's --listen port", port, w.where)
}

// checkSecurity: every container runs as the image's non-root user,
// without privilege escalation or capabilities, on a read-only root; pods
// with claims give them to that group (fsGroup) so /data is writable.
func checkSecurity(m *manifests) report {
	var r report
	for _, w := range m.workloads {
		ps := w.template.Spec.SecurityContext
		if ps == nil {
			ps = &corev1.PodSecurityContext{}
		}
		if len(w.claims) > 0 && (ps.FSGroup == nil || *ps.FSGroup != imageUID) {
			r.add(w.where, "fsGroup: want %d so that the claimed volumes are writable", imageUID)
		}
		for _, c := range w.containers {
			nonRoot, uid := ps.RunAsNonRoot, ps.RunAsUser
			sc := c.SecurityContext
			if sc == nil {
				sc = &corev1.SecurityContext{}
			}
			if sc.RunAsNonRoot != nil {
				nonRoot = sc.RunAsNonRoot
			}
			if sc.RunAsUser != nil {
				uid = sc.RunAsUser
			}
			if nonRoot == nil || !*nonRoot {
				r.add(c.where, "runAsNonRoot is not true")
			}
			if uid == nil || *uid != imageUID {
				r.add(c.where, "runAsUser: want %d", imageUID)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				r.add(c.where, "allowPrivilegeEscalation is not false")
			}
			if sc.Privileged != nil && *sc.Privileged {
				r.add(c.where, "privileged")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				r.add(c.where, "readOnlyRootFilesystem is not true")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				r.add(c.where, "capabilities: want drop [ALL] and no add")
			}
		}
	}
	return r
}

// roleOf is the certificate role a gencluster subcommand runs as.
func roleOf(sub string) string {
	switch sub {
	case "coordinator", "worker":
		return sub
	}
	return "client"
}

// checkTLS: every gencluster container runs with --tls-dir; that folder is
// a read-only mount of a Secret named for the container's role; the pod
// can read the secret's files (fsGroup where the mode keeps others out);
// and no probe is a kubelet gRPC probe, which speaks plaintext to a port
// that requires mutual TLS.
func checkTLS(m *manifests) report {
	var r report
	for _, w := range m.workloads {
		vols := map[string]corev1.Volume{}
		for _, v := range w.template.Spec.Volumes {
			vols[v.Name] = v
		}
		for _, c := range w.containers {
			for kind, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
				if p != nil && p.GRPC != nil {
					r.add(c.where, "%s is a gRPC probe: the kubelet's speaks plaintext, and the gRPC port is mutual TLS (probe --http /livez or /readyz)", kind)
				}
			}
			dir, ok := c.cmd.flags["tls-dir"]
			if !ok || dir == "" {
				r.add(c.where, "gencluster %s runs without --tls-dir: its connections would be plaintext", c.cmd.sub)
				continue
			}
			vm := mountFor(c, dir)
			if vm == nil {
				r.add(c.where, "--tls-dir %s is on no volume", dir)
				continue
			}
			if !vm.ReadOnly {
				r.add(c.where, "--tls-dir %s: mount %q is not readOnly", dir, vm.Name)
			}
			v, ok := vols[vm.Name]
			if !ok || v.Secret == nil {
				r.add(c.where, "--tls-dir %s: volume %q is not a Secret", dir, vm.Name)
				continue
			}
			role := roleOf(c.cmd.sub)
			if !strings.Contains(v.Secret.SecretName, "-"+role+"-") {
				r.add(c.where, "--tls-dir %s: secret %q is not the %s role's (want gencluster-%s-tls)", dir, v.Secret.SecretName, role, role)
			}
			mode := int32(0o644) // the kubelet's default
			if v.Secret.DefaultMode != nil {
				mode = *v.Secret.DefaultMode
			}
			ps := w.template.Spec.SecurityContext
			switch {
			case mode&0o004 != 0:
				r.add(c.where, "--tls-dir %s: secret %q is world-readable (defaultMode %#o): the key should not be", dir, v.Secret.SecretName, mode)
			case mode&0o040 == 0:
				r.add(c.where, "--tls-dir %s: secret %q is not group-readable (defaultMode %#o): user %d cannot read it", dir, v.Secret.SecretName, mode, imageUID)
			case ps == nil || ps.FSGroup == nil || *ps.FSGroup != imageUID:
				r.add(c.where, "--tls-dir %s: secret %q files belong to root's group without fsGroup %d: user %d cannot read them", dir, v.Secret.SecretName, imageUID, imageUID)
			}
		}
	}
	return r
}

// checkRuntime: containers request CPU and memory; coordinators and
// workers get the grace to leave cleanly; Jobs bound their retries and do
// not wait for more workers than run.
func checkRuntime(m *manifests) report {
	var r report
	workers := 0
	for _, w := range m.workloads {
		for _, c := range w.containers {
			if c.cmd.sub == "worker" {
				workers += w.replicas
			}
		}
	}
	for _, w := range m.workloads {
		for _, c := range w.containers {
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[res]; !ok {
					r.add(c.where, "no %s request", res)
				}
			}
			if g := w.template.Spec.TerminationGracePeriodSeconds; (c.cmd.sub == "coordinator" || c.cmd.sub == "worker") && g != nil && *g < minGrace {
				r.add(w.where, "terminationGracePeriodSeconds %d: want at least %d to leave cleanly", *g, minGrace)
			}
			if v, ok := c.cmd.flags["min-workers"]; ok {
				if n, err := strconv.Atoi(v); err != nil || n > workers {
					r.add(c.where, "--min-workers %s: the manifests run %d workers", v, workers)
				}
			}
		}
		if w.kind == "Job" && w.template.Spec.RestartPolicy != corev1.RestartPolicyNever && w.template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
			r.add(w.where, "restartPolicy %q: a Job wants Never or OnFailure", w.template.Spec.RestartPolicy)
		}
	}
	return r
}

// k8sChecks are the cross-reference checks, by name.
func k8sChecks() []struct {
	name  string
	check func(*manifests) report
} {
	return []struct {
		name  string
		check func(*manifests) report
	}{
		{"services", checkServices},
		{"selectors", checkSelectors},
		{"probes", checkProbes},
		{"listen-ports", checkListenPorts},
		{"pod-identity", checkPodIdentity},
		{"peers", checkPeers},
		{"quorum", checkQuorum},
		{"volumes", checkVolumes},
		{"addresses", checkAddresses},
		{"security", checkSecurity},
		{"tls", checkTLS},
		{"runtime", checkRuntime},
	}
}

func mustLoad(t *testing.T) *manifests {
	t.Helper()
	m, err := loadManifests(k8sDir)
	if err != nil {
		t.Fatalf("decoding the manifests: %v", err)
	}
	return m
}

// The manifests decode strictly and their cross-references hold.
func TestK8sManifests(t *testing.T) {
	m := mustLoad(t)
	t.Logf("%d services, %d workloads, %d PodDisruptionBudgets", len(m.services), len(m.workloads), len(m.pdbs))
	for _, c := range k8sChecks() {
		t.Run(c.name, func(t *testing.T) {
			for _, p := range c.check(m) {
				t.Error(p)
			}
		})
	}
}

// The decoder the manifests go through rejects misspelt, duplicate and
// misplaced fields and unknown kinds, so that strictness cannot silently
// regress.
func TestK8sStrictDecoding(t *testing.T) {
	dec, err := newStrictDecoder()
	if err != nil {
		t.Fatal(err)
	}
	const good = `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: s
spec:
  serviceName: s
  replicas: 3
  selector:
    matchLabels: {app: s}
  template:
    metadata:
      labels: {app: s}
    spec:
      containers:
        - name: c
          image: gencluster:dev
          args: [version]
          ports:
            - containerPort: 7000
`
	if err := (&manifests{}).addDocument(dec, "good.yaml", []byte(good)); err != nil {
		t.Fatalf("a valid StatefulSet: %v", err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"misspelt field", "replicas: 3", "replica: 3", `unknown field "spec.replica"`},
		{"misspelt nested field", "- containerPort: 7000", "- containerport: 7000", `unknown field "spec.template.spec.containers[0].ports[0].containerport"`},
		{"duplicate field", "replicas: 3", "replicas: 3\n  replicas: 5", `"replicas"`},
		{"misplaced field", "metadata:\n", "serviceName: s\nmetadata:\n", `unknown field "serviceName"`},
		{"wrong type", "replicas: 3", "replicas: three", "replicas"},
		{"unknown kind", "kind: StatefulSet", "kind: StatefulSett", "StatefulSett"},
		{"unserved version", "apps/v1", "apps/v1beta1", "apps/v1beta1"},
		{"kind the checks do not know", good, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s\n", "kind /v1, Kind=ConfigMap is not one these checks know"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(good, tc.old, tc.new, 1)
			if doc == good {
				t.Fatalf("%q is not in the document", tc.old)
			}
			err := (&manifests{}).addDocument(dec, "bad.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decoding with %q for %q: error %v, want one containing %s", tc.new, tc.old, err, tc.want)
			}
		})
	}
}

// Each check reports a broken cross-reference, naming where: the checks
// cannot pass by checking nothing.
func TestK8sChecksCatchBreakage(t *testing.T) {
	coordinator := func(m *manifests) container { return m.workload("gencluster-coordinator").containers[0] }
	worker := func(m *manifests) container { return m.workload("gencluster-worker").containers[0] }
	for _, tc := range []struct {
		name    string
		breakIt func(*manifests)
		check   func(*manifests) report
		want    string
	}{
		{"coordinator without --tls-dir", func(m *manifests) {
			delete(coordinator(m).cmd.flags, "tls-dir")
		}, checkTLS, "runs without --tls-dir"},
		{"worker given the coordinator's secret", func(m *manifests) {
			w := m.workload("gencluster-worker")
			for i, v := range w.template.Spec.Volumes {
				if v.Secret != nil {
					w.template.Spec.Volumes[i].Secret.SecretName = "gencluster-coordinator-tls"
				}
			}
		}, checkTLS, "is not the worker role's"},
		{"a gRPC liveness probe on the TLS port", func(m *manifests) {
			coordinator(m).LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 7000}}}
		}, checkTLS, "livenessProbe is a gRPC probe"},
		{"submit without fsGroup", func(m *manifests) {
			m.workload("gencluster-submit").template.Spec.SecurityContext.FSGroup = nil
		}, checkTLS, "without fsGroup"},
		{"peer renamed", func(m *manifests) {
			c := coordinator(m)
			c.cmd.flags["peers"] = strings.Replace(c.cmd.flags["peers"], "coordinator-2=", "coordinator-3=", 1)
		}, checkPeers, "--peers lacks pod gencluster-coordinator-2"},
		{"peer on the wrong port", func(m *manifests) {
			c := coordinator(m)
			c.cmd.flags["peers"] = strings.Replace(c.cmd.flags["peers"], "coordinator:7000", "coordinator:7001", 1)
		}, checkPeers, "want gencluster-coordinator-0=gencluster-coordinator-0.gencluster-coordinator:7000"},
		{"targetPort misspelt", func(m *manifests) {
			m.service("gencluster").Spec.Ports[0].TargetPort = intstr.FromString("grcp")
		}, checkServices, "targetPort grcp is no containerPort"},
		{"service selects nothing", func(m *manifests) {
			m.service("gencluster-worker").Spec.Selector["app.kubernetes.io/component"] = "workers"
		}, checkServices, "matches the pods of 0 workloads"},
		{"serviceName not published before ready", func(m *manifests) {
			m.service("gencluster-worker").Spec.PublishNotReadyAddresses = false
		}, checkSelectors, "publishNotReadyAddresses"},
		{"probe on a missing port", func(m *manifests) {
			worker(m).ReadinessProbe.HTTPGet.Port = intstr.FromString("htp")
		}, checkProbes, "readinessProbe port htp is no containerPort"},
		{"--http off its containerPort", func(m *manifests) {
			worker(m).cmd.flags["http"] = "0.0.0.0:8081"
		}, checkListenPorts, "--http port 8081 is not containerPort http (8080)"},
		{"advertise under another service", func(m *manifests) {
			worker(m).cmd.flags["advertise"] = "$(POD_NAME).gencluster:7100"
		}, checkPodIdentity, "want $(POD_NAME).gencluster-worker:PORT"},
		{"ordered start", func(m *manifests) {
			m.workload("gencluster-coordinator").sts.Spec.PodManagementPolicy = appsv1.OrderedReadyPodManagement
		}, checkQuorum, "want Parallel"},
		{"budget below quorum", func(m *manifests) {
			two := intstr.FromInt32(2)
			m.pdbs[0].Spec.MaxUnavailable = &two
		}, checkQuorum, "fewer than a quorum of 2"},
		{"mount of no volume", func(m *manifests) {
			worker(m).VolumeMounts[0].Name = "date"
		}, checkVolumes, `volumeMount "date" (/data) names no volume`},
		{"join on a port the service lacks", func(m *manifests) {
			worker(m).cmd.flags["join"] = "gencluster:7001"
		}, checkAddresses, "port 7001 is no port of"},
		{"job dials the workers", func(m *manifests) {
			m.workload("gencluster-submit").containers[0].cmd.flags["coordinator"] = "gencluster-worker-0.gencluster-worker:7100"
		}, checkAddresses, "no coordinator's --listen port"},
		{"root", func(m *manifests) {
			root := int64(0)
			coordinator(m).SecurityContext.RunAsUser = &root
		}, checkSecurity, "runAsUser: want 65532"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustLoad(t)
			tc.breakIt(m)
			r := tc.check(m)
			if !slices.ContainsFunc(r, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("broken manifests: problems %q, want one containing %q", r, tc.want)
			}
		})
	}
}

// cliFlag is a flag in a gencluster subcommand's --help.
type cliFlag struct{ takesValue, required bool }

// helpFlag matches a flag line of cobra's help: "  -h, --name type   usage".
var helpFlag = regexp.MustCompile(`(?m)^\s+(?:-[A-Za-z], )?--([a-z0-9][a-z0-9-]*)(?: ([A-Za-z0-9.]+))?\s{2,}(.*)$`)

// cliFlags runs `bin SUB --help` and reads the subcommand's flags.
func cliFlags(bin, sub string) (map[string]cliFlag, error) {
	out, err := exec.Command(bin, append(strings.Fields(sub), "--help")...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("gencluster %s --help: %v\n%s", sub, err, out)
	}
	if !bytes.Contains(out, []byte("gencluster "+sub)) {
		return nil, fmt.Errorf("gencluster %s --help does not show its usage:\n%s", sub, out)
	}
	flags := map[string]cliFlag{}
	for _, sm := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		flags[sm[1]] = cliFlag{takesValue: sm[2] != "", required: strings.Contains(sm[3], "(required)")}
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("gencluster %s --help lists no flags:\n%s", sub, out)
	}
	return flags, nil
}

// checkFlags: every flag in the command line is a flag of its subcommand
// with a value if it takes one, and every required flag is given.
func checkFlags(c container, known map[string]cliFlag) report {
	var r report
	for _, name := range slices.Sorted(maps.Keys(c.cmd.flags)) {
		v := c.cmd.flags[name]
		f, ok := known[name]
		switch {
		case !ok:
			r.add(c.where, "--%s is no flag of gencluster %s", name, c.cmd.sub)
		case f.takesValue && v == "":
			r.add(c.where, "--%s takes a value", name)
		case !f.takesValue && v != "" && v != "true" && v != "false":
			r.add(c.where, "--%s is a switch, given %q", name, v)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(known)) {
		if _, ok := c.cmd.flags[name]; known[name].required && !ok {
			r.add(c.where, "--%s is required by gencluster %s", name, c.cmd.sub)
		}
	}
	return r
}

// buildGencluster builds the gencluster binary into a temporary folder.
func buildGencluster(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gencluster")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/gencluster")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gencluster: %v\n%s", err, out)
	}
	return bin
}

// Every flag the manifests give gencluster is one its subcommand has (as
// the real binary's --help says), and no required flag is missing.
func TestK8sFlags(t *testing.T) {
	m := mustLoad(t)
	bin := buildGencluster(t)
	known := map[string]map[string]cliFlag{}
	for _, w := range m.workloads {
		for _, c := range w.containers {
			flags, ok := known[c.cmd.sub]
			if !ok {
				var err error
				if flags, err = cliFlags(bin, c.cmd.sub); err != nil {
					t.Errorf("%s: %v", c.where, err)
				}
				known[c.cmd.sub] = flags
			}
			if flags == nil {
				continue
			}
			for _, p := range checkFlags(c, flags) {
				t.Error(p)
			}
			t.Logf("%s: gencluster %s, %d flags checked", c.where, c.cmd.sub, len(c.cmd.flags))
		}
	}
	// The flag parser itself: a made-up flag is caught.
	bad := container{where: "made up", cmd: commandLine{sub: "worker", flags: map[string]string{"thread": "2"}}}
	if r := checkFlags(bad, known["worker"]); !slices.ContainsFunc(r, func(p string) bool { return strings.Contains(p, "--thread is no flag") }) {
		t.Errorf("--thread for worker: problems %q, want it named as no flag", r)
	}
}
