package main

// One generic strategy and store for every built-in kind this server serves. The real
// kube-apiserver has a hand-written strategy per kind (k8s.io/kubernetes/pkg/registry);
// here a resourceDef carries the few kind-specific parts that matter to a client: which
// fields are selectable, what happens to status on create, defaults, graceful deletion.

import (
	"context"
	"reflect"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// resourceDef describes one served resource.
type resourceDef struct {
	gv         schema.GroupVersion
	plural     string
	singular   string
	kind       string
	namespaced bool
	// status: the kind has a status subresource (and the main resource ignores status).
	status bool
	// resetStatusOnCreate: status is cleared on create (pods, services), as kube-apiserver does.
	resetStatusOnCreate bool
	shortNames          []string
	categories          []string
	// fieldNames: selectable fields beyond metadata.name/namespace; fields computes them.
	fieldNames []string
	fields     func(obj runtime.Object) fields.Set
	// prepareCreate sets defaults on create; prepareUpdate on every update.
	prepareCreate func(obj runtime.Object)
	prepareUpdate func(obj, old runtime.Object)
	validate      func(obj runtime.Object) field.ErrorList
	// validateUpdate adds the checks of an update (immutable fields) to validate's.
	validateUpdate func(obj, old runtime.Object) field.ErrorList
	// validateStatus checks an update through the status subresource.
	validateStatus func(obj runtime.Object) field.ErrorList
	// gracefulDelete decides a graceful deletion (pods); nil: deletion is immediate.
	gracefulDelete func(obj runtime.Object, options *metav1.DeleteOptions) bool
}

func (r *resourceDef) groupResource() schema.GroupResource {
	return r.gv.WithResource(r.plural).GroupResource()
}

func (r *resourceDef) getAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, nil, err
	}
	set := fields.Set{"metadata.name": m.GetName()}
	if r.namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	if r.fields != nil {
		for k, v := range r.fields(obj) {
			set[k] = v
		}
	}
	return labels.Set(m.GetLabels()), set, nil
}

// structField returns the named field of a struct object (Spec, Status), or an invalid Value.
func structField(obj runtime.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() == reflect.Ptr {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return reflect.Value{}
	}
	return v.FieldByName(name)
}

func copyField(dst, src runtime.Object, name string) {
	d, s := structField(dst, name), structField(src, name)
	if d.IsValid() && s.IsValid() && d.CanSet() {
		d.Set(s)
	}
}

type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	r *resourceDef
	// forStatus: this is the status subresource's strategy.
	forStatus bool
}

var _ rest.RESTCreateUpdateStrategy = &strategy{}
var _ rest.RESTGracefulDeleteStrategy = &strategy{}
var _ rest.ResetFieldsStrategy = &strategy{}

func (s *strategy) NamespaceScoped() bool { return s.r.namespaced }

func (s *strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	if m, err := meta.Accessor(obj); err == nil && structField(obj, "Spec").IsValid() {
		m.SetGeneration(1)
	}
	if s.r.resetStatusOnCreate {
		if st := structField(obj, "Status"); st.IsValid() && st.CanSet() {
			st.Set(reflect.Zero(st.Type()))
		}
	}
	if s.r.prepareCreate != nil {
		s.r.prepareCreate(obj)
	}
}

func (s *strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	oldM, err := meta.Accessor(old)
	if err != nil {
		return
	}
	if s.forStatus {
		// Through the status subresource only status changes.
		copyField(obj, old, "Spec")
		m.SetGeneration(oldM.GetGeneration())
	} else {
		if s.r.status {
			copyField(obj, old, "Status")
		}
		spec, oldSpec := structField(obj, "Spec"), structField(old, "Spec")
		if spec.IsValid() && oldSpec.IsValid() && !equality.Semantic.DeepEqual(spec.Interface(), oldSpec.Interface()) {
			m.SetGeneration(oldM.GetGeneration() + 1)
		} else {
			m.SetGeneration(oldM.GetGeneration())
		}
	}
	if s.r.prepareUpdate != nil {
		s.r.prepareUpdate(obj, old)
	}
}

func (s *strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	if s.r.validate != nil {
		return s.r.validate(obj)
	}
	return nil
}

func (s *strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	if s.forStatus {
		if s.r.validateStatus != nil {
			return s.r.validateStatus(obj)
		}
		return nil
	}
	var errs field.ErrorList
	if s.r.validate != nil {
		errs = append(errs, s.r.validate(obj)...)
	}
	if s.r.validateUpdate != nil {
		errs = append(errs, s.r.validateUpdate(obj, old)...)
	}
	return errs
}

func (s *strategy) WarningsOnCreate(ctx context.Context, obj runtime.Object) []string { return nil }
func (s *strategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string {
	return nil
}
func (s *strategy) Canonicalize(obj runtime.Object) {}
func (s *strategy) AllowCreateOnUpdate() bool       { return false }
func (s *strategy) AllowUnconditionalUpdate() bool  { return true }

func (s *strategy) CheckGracefulDelete(ctx context.Context, obj runtime.Object, options *metav1.DeleteOptions) bool {
	if s.r.gracefulDelete == nil {
		return false
	}
	return s.r.gracefulDelete(obj, options)
}

// GetResetFields tells server-side apply which fields each endpoint owns: the main resource
// does not set status, the status subresource does not set spec.
func (s *strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if !s.r.status {
		return nil
	}
	path := "status"
	if s.forStatus {
		path = "spec"
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.r.gv.String()): fieldpath.NewSet(fieldpath.MakePathOrDie(path)),
	}
}

// REST is a resource's storage, with the discovery extras kubectl uses.
type REST struct {
	*genericregistry.Store
	shortNames []string
	categories []string
}

var _ rest.ShortNamesProvider = &REST{}
var _ rest.CategoriesProvider = &REST{}

func (r *REST) ShortNames() []string { return r.shortNames }
func (r *REST) Categories() []string { return r.categories }

// StatusREST is the status subresource: get and update (and so patch and apply).
type StatusREST struct {
	store *genericregistry.Store
}

var _ rest.Patcher = &StatusREST{}

func (r *StatusREST) New() runtime.Object { return r.store.New() }
func (r *StatusREST) Destroy()            {}
func (r *StatusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}
func (r *StatusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// Never create through the status subresource.
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}
func (r *StatusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

// newStorage builds the storage (and status storage, if any) of one resource.
func newStorage(r *resourceDef, optsGetter generic.RESTOptionsGetter) (*REST, *StatusREST, error) {
	gvk := r.gv.WithKind(r.kind)
	listGVK := r.gv.WithKind(r.kind + "List")
	st := &strategy{ObjectTyper: Scheme, NameGenerator: names.SimpleNameGenerator, r: r}
	store := &genericregistry.Store{
		NewFunc: func() runtime.Object {
			obj, _ := Scheme.New(gvk)
			return obj
		},
		NewListFunc: func() runtime.Object {
			obj, _ := Scheme.New(listGVK)
			return obj
		},
		DefaultQualifiedResource:  r.groupResource(),
		SingularQualifiedResource: schema.GroupResource{Group: r.gv.Group, Resource: r.singular},
		CreateStrategy:            st,
		UpdateStrategy:            st,
		DeleteStrategy:            st,
		ResetFieldsStrategy:       st,
		ReturnDeletedObject:       r.gracefulDelete != nil,
		TableConvertor:            rest.NewDefaultTableConvertor(r.groupResource()),
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: r.getAttrs}); err != nil {
		return nil, nil, err
	}
	main := &REST{Store: store, shortNames: r.shortNames, categories: r.categories}
	if !r.status {
		return main, nil, nil
	}
	statusStore := *store
	statusStrategy := &strategy{ObjectTyper: Scheme, NameGenerator: names.SimpleNameGenerator, r: r, forStatus: true}
	statusStore.CreateStrategy = nil
	statusStore.DeleteStrategy = nil
	statusStore.UpdateStrategy = statusStrategy
	statusStore.ResetFieldsStrategy = statusStrategy
	return main, &StatusREST{store: &statusStore}, nil
}
