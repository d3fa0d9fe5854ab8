# What "cmake --install" puts where, relative to the install prefix, with
# DESTDIR staging as a FreeBSD port does it:
#
#   sbin/bs_router                        bin/bs_router-client
#   etc/rc.d/bs_router                    etc/newsyslog.conf.d/bs_router.conf
#   etc/bs_router/<pool>.json.sample      man/man8, man/man1 (FreeBSD)
#                                         share/man/... and
#                                         lib/systemd/system/bs_router@.service
#                                         (elsewhere)
#
# The rc.d script, the newsyslog entry and the systemd unit name paths under
# /usr/local, FreeBSD's prefix; for another prefix they are rewritten while
# installing, as a port's SUB_FILES would.  A Linux package with prefix /usr
# wants -DCMAKE_INSTALL_SYSCONFDIR=/etc, as with any GNUInstallDirs project.

include(GNUInstallDirs)

install(TARGETS bs_router RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(TARGETS bs_router-client RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

if(CMAKE_SYSTEM_NAME STREQUAL "FreeBSD")
  set(_bs_router_mandir_default "man")
else()
  set(_bs_router_mandir_default "${CMAKE_INSTALL_MANDIR}")
endif()
set(BS_ROUTER_MANDIR "${_bs_router_mandir_default}" CACHE STRING
    "Where the man pages go, under the install prefix unless absolute")
install(FILES docs/bs_router.8 DESTINATION ${BS_ROUTER_MANDIR}/man8)
install(FILES docs/bs_router-client.1 DESTINATION ${BS_ROUTER_MANDIR}/man1)

# The rest is installed by code that runs at install time, so that it sees
# the prefix given to "cmake --install --prefix" and the config samples
# present then.  Paths known now are handed over first.
if(IS_ABSOLUTE "${CMAKE_INSTALL_SYSCONFDIR}")
  set(_bs_router_etc "${CMAKE_INSTALL_SYSCONFDIR}")
else()
  set(_bs_router_etc "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SYSCONFDIR}")
endif()
if(CMAKE_SYSTEM_NAME STREQUAL "FreeBSD")
  set(_bs_router_systemd "")
else()
  set(_bs_router_systemd "\${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
endif()
install(CODE "
set(_bs_router_source \"${CMAKE_CURRENT_SOURCE_DIR}\")
set(_bs_router_work \"${CMAKE_CURRENT_BINARY_DIR}/install-prefixed\")
set(_bs_router_etc \"${_bs_router_etc}\")
set(_bs_router_systemd \"${_bs_router_systemd}\")
")

install(CODE [==[
# Installs source file FROM as DIR/NAME, with /usr/local/ turned into the
# install prefix.
function(_bs_router_install_prefixed from dir name type)
  file(READ "${_bs_router_source}/${from}" text)
  if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr/local")
    string(REPLACE "/usr/local/" "${CMAKE_INSTALL_PREFIX}/" text "${text}")
  endif()
  file(MAKE_DIRECTORY "${_bs_router_work}")
  file(WRITE "${_bs_router_work}/${name}" "${text}")
  file(INSTALL DESTINATION "${dir}" TYPE ${type} RENAME "${name}"
       FILES "${_bs_router_work}/${name}")
endfunction()

_bs_router_install_prefixed(rc.d/bs_router "${_bs_router_etc}/rc.d" bs_router PROGRAM)
_bs_router_install_prefixed(rc.d/bs_router.newsyslog.conf
                            "${_bs_router_etc}/newsyslog.conf.d" bs_router.conf FILE)
if(_bs_router_systemd)
  _bs_router_install_prefixed(rc.d/bs_router@.service "${_bs_router_systemd}"
                              bs_router@.service FILE)
endif()

# Samples, not configs: an upgrade must never overwrite a pool's settings.
file(GLOB _bs_router_samples "${_bs_router_source}/config/*.json")
foreach(sample IN LISTS _bs_router_samples)
  get_filename_component(sample_name "${sample}" NAME)
  file(INSTALL DESTINATION "${_bs_router_etc}/bs_router" TYPE FILE
       RENAME "${sample_name}.sample" FILES "${sample}")
endforeach()
]==])
