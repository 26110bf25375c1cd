//! The shim's functions as Cranelift IR (native-module-contract.md §1.3 and the callbacks of §2.2).
//!
//! All functions use the Windows x64 / ARM64 calling convention (`WindowsFastcall`; Cranelift maps it to
//! AAPCS64 on ARM64). Kernel imports are called through their IAT slot (`load` + `call_indirect`, as MSVC
//! does); every image-local symbol is colocated so x64 code needs only RIP-relative relocations and ARM64 code
//! only ADRP/ADD.

use std::collections::HashMap;

use cranelift_codegen::ir::{
    self, condcodes::IntCC, types, AbiParam, ExternalName, InstBuilder, MemFlagsData, Signature, UserExternalName,
    UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use crate::metadata::*;
use crate::{ShimError, ShimFunction, Symbol, DRIVER_ENTRY, NETIO, NTOSKRNL};

const I64: ir::Type = types::I64;
const I32: ir::Type = types::I32;
const STATUS_SUCCESS: i64 = 0;
const STATUS_PENDING: i64 = 0x103;
const REG_BINARY: i64 = 3;
/// `DRIVER_OBJECT.DriverUnload` on 64-bit Windows (wdm.h).
const DRIVER_OBJECT_DRIVER_UNLOAD: i32 = 0x68;
/// `UNICODE_STRING.Buffer`.
const UNICODE_STRING_BUFFER: i32 = 8;
/// `NPI_MODULEID.Guid`.
const MODULE_ID_GUID: i32 = 8;

/// Builds one function: tracks the symbols it refers to.
struct ShimBuilder<'a> {
    b: FunctionBuilder<'a>,
    externals: &'a mut Vec<Symbol>,
    refs: HashMap<Symbol, ir::GlobalValue>,
}

impl<'a> ShimBuilder<'a> {
    fn symbol_address(&mut self, s: Symbol) -> Value {
        let gv = match self.refs.get(&s) {
            Some(gv) => *gv,
            None => {
                let index = self.externals.len() as u32;
                self.externals.push(s.clone());
                let r = self.b.func.declare_imported_user_function(UserExternalName { namespace: 0, index });
                let gv = self.b.func.create_global_value(ir::GlobalValueData::Symbol {
                    name: ExternalName::user(r),
                    offset: 0.into(),
                    colocated: true,
                    tls: false,
                });
                self.refs.insert(s, gv);
                gv
            }
        };
        self.b.ins().symbol_value(I64, gv)
    }

    fn data(&mut self, name: &str) -> Value {
        self.symbol_address(Symbol::Data(name.to_string()))
    }

    /// Calls `dll!name` through its IAT slot.
    fn call_import(
        &mut self,
        dll: &str,
        name: &str,
        params: &[ir::Type],
        ret: Option<ir::Type>,
        args: &[Value],
    ) -> Option<Value> {
        let slot = self.symbol_address(Symbol::Import { dll: dll.to_string(), name: name.to_string() });
        let target = self.b.ins().load(I64, MemFlagsData::trusted().with_readonly(), slot, 0);
        let mut sig = Signature::new(CallConv::WindowsFastcall);
        sig.params.extend(params.iter().map(|t| AbiParam::new(*t)));
        sig.returns.extend(ret.iter().map(|t| AbiParam::new(*t)));
        let sig = self.b.import_signature(sig);
        let call = self.b.ins().call_indirect(sig, target, args);
        self.b.inst_results(call).first().copied()
    }

    fn store(&mut self, v: Value, addr: Value, off: i32) {
        self.b.ins().store(MemFlagsData::trusted(), v, addr, off);
    }

    fn load(&mut self, ty: ir::Type, addr: Value, off: i32) -> Value {
        self.b.ins().load(ty, MemFlagsData::trusted(), addr, off)
    }

    fn iconst(&mut self, ty: ir::Type, v: i64) -> Value {
        self.b.ins().iconst(ty, v)
    }

    fn ret(&mut self, vals: &[Value]) {
        self.b.ins().return_(vals);
    }
}

/// Builds a function `name(params) -> ret` with `body` and collects it.
fn function(
    out: &mut Vec<ShimFunction>,
    config: TargetFrontendConfig,
    ctx: &mut FunctionBuilderContext,
    name: &str,
    params: &[ir::Type],
    ret: Option<ir::Type>,
    body: impl FnOnce(&mut ShimBuilder, &[Value]),
) -> Result<(), ShimError> {
    let mut sig = Signature::new(CallConv::WindowsFastcall);
    sig.params.extend(params.iter().map(|t| AbiParam::new(*t)));
    sig.returns.extend(ret.iter().map(|t| AbiParam::new(*t)));
    let mut func = ir::Function::with_name_signature(UserFuncName::testcase(name), sig);
    let mut externals = Vec::new();
    {
        let b = FunctionBuilder::new(&mut func, ctx);
        let mut sb = ShimBuilder { b, externals: &mut externals, refs: HashMap::new() };
        let entry = sb.b.create_block();
        sb.b.append_block_params_for_function_params(entry);
        sb.b.switch_to_block(entry);
        let args = sb.b.block_params(entry).to_vec();
        body(&mut sb, &args);
        sb.b.seal_all_blocks();
        sb.b.finalize(config);
    }
    let flags = cranelift_codegen::settings::Flags::new(cranelift_codegen::settings::builder());
    cranelift_codegen::verifier::verify_function(&func, &flags)
        .map_err(|e| ShimError::Ir { function: name.to_string(), message: e.to_string() })?;
    out.push(ShimFunction { name: name.to_string(), function: func, externals });
    Ok(())
}

/// Emits `if cond { return value }` and continues in a fresh block.
fn return_if(sb: &mut ShimBuilder, cond: Value, value: Option<Value>) {
    let ret_block = sb.b.create_block();
    let cont = sb.b.create_block();
    sb.b.ins().brif(cond, ret_block, &[], cont, &[]);
    sb.b.switch_to_block(ret_block);
    match value {
        Some(v) => sb.ret(&[v]),
        None => sb.ret(&[]),
    }
    sb.b.switch_to_block(cont);
}

/// A metadata callback `void f(T** out, size_t* count)` returning `(array, count)` or `(NULL, 0)`.
fn array_callback(
    out: &mut Vec<ShimFunction>,
    config: TargetFrontendConfig,
    ctx: &mut FunctionBuilderContext,
    name: &str,
    array: Option<(&str, usize)>,
) -> Result<(), ShimError> {
    function(out, config, ctx, name, &[I64, I64], None, |sb, a| {
        let (ptr, count) = match array {
            Some((sym, n)) => (sb.data(sym), sb.iconst(I64, n as i64)),
            None => (sb.iconst(I64, 0), sb.iconst(I64, 0)),
        };
        sb.store(ptr, a[0], 0);
        sb.store(count, a[1], 0);
        sb.ret(&[]);
    })
}

/// The shim's functions for a module with this layout.
pub fn build_functions(layout: &Layout, config: TargetFrontendConfig) -> Result<Vec<ShimFunction>, ShimError> {
    let mut out = Vec::new();
    let ctx = &mut FunctionBuilderContext::new();
    driver_entry_functions(&mut out, config, ctx)?;
    nmr_client_functions(&mut out, config, ctx)?;
    metadata_callbacks(&mut out, config, ctx, layout)?;
    Ok(out)
}

/// `DriverEntry` and the registry query routine it uses to read the NPI module id (contract §1.3).
fn driver_entry_functions(
    out: &mut Vec<ShimFunction>,
    config: TargetFrontendConfig,
    ctx: &mut FunctionBuilderContext,
) -> Result<(), ShimError> {
    // DriverEntry(DRIVER_OBJECT*, UNICODE_STRING* registry_path) -> NTSTATUS (contract §1.3).
    function(out, config, ctx, DRIVER_ENTRY, &[I64, I64], Some(I32), |sb, a| {
        let path = sb.load(I64, a[1], UNICODE_STRING_BUFFER);
        let relative_to = sb.iconst(I32, 0); // RTL_REGISTRY_ABSOLUTE
        let table = sb.data(REGISTRY_QUERY_TABLE);
        let null = sb.iconst(I64, 0);
        let status = sb
            .call_import(
                NTOSKRNL,
                "RtlQueryRegistryValues",
                &[I32, I64, I64, I64, I64],
                Some(I32),
                &[relative_to, path, table, null, null],
            )
            .expect("returns NTSTATUS");
        let failed = sb.b.ins().icmp_imm_s(IntCC::SignedLessThan, status, 0);
        return_if(sb, failed, Some(status));
        let chars = sb.data(CLIENT_CHARACTERISTICS);
        let handle = sb.data(CLIENT_HANDLE);
        let status = sb
            .call_import(NETIO, "NmrRegisterClient", &[I64, I64, I64], Some(I32), &[chars, null, handle])
            .expect("returns NTSTATUS");
        let failed = sb.b.ins().icmp_imm_s(IntCC::SignedLessThan, status, 0);
        return_if(sb, failed, Some(status));
        let unload = sb.symbol_address(Symbol::Function(FN_DRIVER_UNLOAD.into()));
        sb.store(unload, a[0], DRIVER_OBJECT_DRIVER_UNLOAD);
        sb.ret(&[status]);
    })?;

    // QueryRoutine(ValueName, ValueType, ValueData, ValueLength, Context, EntryContext): accepts only a
    // 16-byte REG_BINARY and stores it as the NPI module id's GUID.
    function(out, config, ctx, FN_QUERY_NPI_MODULE_ID, &[I64, I32, I64, I32, I64, I64], Some(I32), |sb, a| {
        let invalid = sb.iconst(I32, STATUS_INVALID_PARAMETER as i64);
        let not_binary = sb.b.ins().icmp_imm_u(IntCC::NotEqual, a[1], REG_BINARY);
        return_if(sb, not_binary, Some(invalid));
        let wrong_length = sb.b.ins().icmp_imm_u(IntCC::NotEqual, a[3], 16);
        return_if(sb, wrong_length, Some(invalid));
        let module_id = sb.data(MODULE_ID);
        let lo = sb.b.ins().load(I64, MemFlagsData::new(), a[2], 0);
        let hi = sb.b.ins().load(I64, MemFlagsData::new(), a[2], 8);
        sb.store(lo, module_id, MODULE_ID_GUID);
        sb.store(hi, module_id, MODULE_ID_GUID + 8);
        let ok = sb.iconst(I32, STATUS_SUCCESS);
        sb.ret(&[ok]);
    })?;
    Ok(())
}

/// The NMR client callbacks and `DriverUnload` (contract §1.3).
fn nmr_client_functions(
    out: &mut Vec<ShimFunction>,
    config: TargetFrontendConfig,
    ctx: &mut FunctionBuilderContext,
) -> Result<(), ShimError> {
    // ClientAttachProvider(NmrBindingHandle, ClientContext, ProviderRegistrationInstance): one provider only;
    // the metadata table is the client dispatch (contract §1.3).
    function(out, config, ctx, FN_CLIENT_ATTACH, &[I64, I64, I64], Some(I32), |sb, a| {
        let binding = sb.data(BINDING_HANDLE);
        let current = sb.load(I64, binding, 0);
        let attached = sb.b.ins().icmp_imm_u(IntCC::NotEqual, current, 0);
        let invalid = sb.iconst(I32, STATUS_INVALID_PARAMETER as i64);
        return_if(sb, attached, Some(invalid));
        let table = sb.data(crate::METADATA_TABLE);
        let provider_ctx = sb.data(PROVIDER_BINDING_CONTEXT);
        let provider_dispatch = sb.data(PROVIDER_DISPATCH);
        let status = sb
            .call_import(
                NETIO,
                "NmrClientAttachProvider",
                &[I64, I64, I64, I64, I64],
                Some(I32),
                &[a[0], a[1], table, provider_ctx, provider_dispatch],
            )
            .expect("returns NTSTATUS");
        let failed = sb.b.ins().icmp_imm_s(IntCC::SignedLessThan, status, 0);
        return_if(sb, failed, Some(status));
        let binding = sb.data(BINDING_HANDLE);
        sb.store(a[0], binding, 0);
        sb.ret(&[status]);
    })?;

    // ClientDetachProvider(ClientBindingContext): forget the binding.
    function(out, config, ctx, FN_CLIENT_DETACH, &[I64], Some(I32), |sb, _| {
        let binding = sb.data(BINDING_HANDLE);
        let zero = sb.iconst(I64, 0);
        sb.store(zero, binding, 0);
        let ok = sb.iconst(I32, STATUS_SUCCESS);
        sb.ret(&[ok]);
    })?;

    // DriverUnload(DRIVER_OBJECT*): deregister, and wait if deregistration is pending.
    function(out, config, ctx, FN_DRIVER_UNLOAD, &[I64], None, |sb, _| {
        let handle_slot = sb.data(CLIENT_HANDLE);
        let handle = sb.load(I64, handle_slot, 0);
        let status =
            sb.call_import(NETIO, "NmrDeregisterClient", &[I64], Some(I32), &[handle]).expect("returns NTSTATUS");
        let done = sb.b.ins().icmp_imm_u(IntCC::NotEqual, status, STATUS_PENDING);
        return_if(sb, done, None);
        sb.call_import(NETIO, "NmrWaitForClientDeregisterComplete", &[I64], Some(I32), &[handle]);
        sb.ret(&[]);
    })?;
    Ok(())
}

/// The metadata-table callbacks (contract §2.2).
fn metadata_callbacks(
    out: &mut Vec<ShimFunction>,
    config: TargetFrontendConfig,
    ctx: &mut FunctionBuilderContext,
    layout: &Layout,
) -> Result<(), ShimError> {
    // Empty lists are (NULL, 0).
    array_callback(out, config, ctx, FN_GET_PROGRAMS, Some((PROGRAMS, layout.sorted_programs.len())))?;
    array_callback(out, config, ctx, FN_GET_MAPS, (layout.map_count > 0).then_some((MAPS, layout.map_count)))?;
    array_callback(out, config, ctx, FN_GET_HASH, layout.has_elf_hash.then_some((ELF_HASH, 32)))?;
    array_callback(
        out,
        config,
        ctx,
        FN_GET_MAP_INITIAL_VALUES,
        (layout.initial_values_count > 0).then_some((MAP_INITIAL_VALUES, layout.initial_values_count)),
    )?;
    array_callback(
        out,
        config,
        ctx,
        FN_GET_GLOBAL_SECTIONS,
        (layout.global_section_count > 0).then_some((GLOBAL_SECTIONS, layout.global_section_count)),
    )?;
    let version = layout.version;
    function(out, config, ctx, FN_GET_VERSION, &[I64], None, |sb, a| {
        for (i, v) in version.iter().enumerate() {
            let c = sb.iconst(I32, *v as i64);
            sb.store(c, a[0], 4 * i as i32);
        }
        sb.ret(&[]);
    })?;
    Ok(())
}
