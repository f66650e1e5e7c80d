/*
 * bcryptprimitives.dll for Wine 8, which lacks ProcessPrng: Go 1.22 and
 * later call it at start-up for the runtime's random numbers. It fills the
 * buffer from RtlGenRandom, which advapi32 exports as SystemFunction036
 * and takes at most a ULONG's worth of bytes a call.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
	while (length > 0) {
		ULONG n = length > 0x7fffffff ? 0x7fffffff : (ULONG)length;
		if (!SystemFunction036(data, n))
			return FALSE;
		data += n;
		length -= n;
	}
	return TRUE;
}
